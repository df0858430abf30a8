"""A saved run folder to tamper with, shared by the artifact fault tests (T12, round 3's R9-R14)."""

from __future__ import annotations

import json
from pathlib import Path

from lstmcast import Forecaster
from lstmcast.run.manifest import sha256_bytes
from tests.conftest import seasonal_frame, small_config


def save_trained_run(d: Path) -> Path:
    """``d/run``: a run folder with its checkpoints, trained on its data file ``d/series.csv``; returns ``d``."""
    csv = d / "series.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    cfg = small_config(data={"path": str(csv)}, train={"precision": "fp32", "max_epochs": 1, "checkpoint_every": 2})
    Forecaster(cfg).fit(str(csv), run_dir=d / "run").save(d / "run")
    return d


def rehash(run: Path) -> None:
    """Re-compute manifest.json's sha256 of every file it lists, as someone editing a run folder would."""
    m = json.loads((run / "manifest.json").read_text())
    m["sha256"] = {n: sha256_bytes((run / n).read_bytes()) for n in m["sha256"]}
    (run / "manifest.json").write_text(json.dumps(m))
