"""Issue 21, items 9-14 (FAULTS R9-R14): weak answers of a hostile trial. A run folder's stored data path is
not trusted, data errors echo only short excerpts, tampered artifacts are refused, atomic writes leave no temp
file behind, states that cannot be resumed are refused before training, and paths of the wrong kind are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import lstmcast
from lstmcast import Forecaster
from lstmcast.errors import CheckpointError, ConfigError, DataError
from lstmcast.run.folder import sha256_bytes
from tests.conftest import seasonal_frame, small_config

SECRET = "root:$6$SECRETSALT$SECRETHASH:19000:0:99999:7:::"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A saved run folder (with its checkpoints) and its data file series.csv."""
    d = tmp_path_factory.mktemp("r3")
    csv = d / "series.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    cfg = small_config(data={"path": str(csv)}, train={"precision": "fp32", "max_epochs": 1, "checkpoint_every": 2})
    Forecaster(cfg).fit(str(csv), run_dir=d / "run").save(d / "run")
    return d


@pytest.fixture
def run(pristine, tmp_path) -> Path:
    shutil.copytree(pristine / "run", tmp_path / "run")
    return tmp_path / "run"


def rehash(run: Path) -> None:
    m = json.loads((run / "manifest.json").read_text())
    m["sha256"] = {n: sha256_bytes((run / n).read_bytes()) for n in m["sha256"]}
    (run / "manifest.json").write_text(json.dumps(m))


def point_data_path_at(run: Path, target: Path) -> None:
    text = (run / "config.yaml").read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("path:"))
    (run / "config.yaml").write_text(text.replace(line, line.split("path:")[0] + f"path: {target}"))
    rehash(run)


# -- R9: a data path stored in a run folder is not trusted like a typed one -------------------------------
@pytest.mark.parametrize("content", [SECRET + "\n", f"time,y\n{SECRET},1\n"])
def test_r9_a_rehashed_data_path_pointing_at_a_secret_is_never_read(run, tmp_path, content):
    secret = tmp_path / "shadow"
    secret.write_text(content)
    point_data_path_at(run, secret)
    fc = lstmcast.load(run)
    for call in (fc.predict, fc.backtest):
        with pytest.raises(ConfigError, match=r"data.path .*shadow' was not recorded with its sha256.* --data") as err:
            call()
        assert "SECRET" not in str(err.value)


def test_r9_the_recorded_training_data_is_read_while_unchanged_and_refused_once_changed(run, pristine, tmp_path):
    record = json.loads((run / "manifest.json").read_text())["data"]
    assert record["path"] == str(pristine / "series.csv") and len(record["sha256"]) == 64
    assert len(lstmcast.load(run).predict()) == 6  # the unchanged training file: read as before
    changed = tmp_path / "series.csv"
    seasonal_frame(300, seed=1).to_csv(changed, index=False)
    m = json.loads((run / "manifest.json").read_text())
    m["data"]["path"] = str(changed)  # the record names the file, but its bytes differ from the hash
    (run / "manifest.json").write_text(json.dumps(m))
    point_data_path_at(run, changed)
    with pytest.raises(ConfigError, match=r"gone or changed since training .*--data"):
        lstmcast.load(run).predict()
    assert len(lstmcast.load(run).predict(str(changed))) == 6  # typed: trusted


# -- R10: data errors echo short excerpts only -------------------------------------------------------------
def _fit_error(tmp_path: Path, frame: pd.DataFrame, **data) -> str:
    csv = tmp_path / "d.csv"
    frame.to_csv(csv, index=False)
    with pytest.raises(DataError) as err:
        Forecaster(small_config(data={"path": str(csv), **data})).fit(str(csv))
    return str(err.value)


def test_r10_a_huge_cell_is_cut_to_a_short_excerpt(tmp_path):
    df = seasonal_frame(100)
    df["y"] = df["y"].astype(object)
    df.loc[5, "y"] = "x" * 1_000_000
    msg = _fit_error(tmp_path, df)
    assert len(msg) < 400 and "'xxxx" in msg and "line 7" in msg
    df = seasonal_frame(100)
    df["time"] = df["time"].astype(str)
    df.loc[5, "time"] = "t" * 1_000_000
    msg = _fit_error(tmp_path, df)
    assert len(msg) < 600 and "unparseable timestamps, first 'tttt" in msg


def test_r10_huge_column_names_are_cut_in_every_listing(tmp_path):
    df = seasonal_frame(100).rename(columns={"y": "y" * 100_000})
    msg = _fit_error(tmp_path, df)
    assert len(msg) < 400 and "Columns present: 'time', 'yyy" in msg
    df = pd.concat([seasonal_frame(100), pd.DataFrame({f"c{k}": [1.0] * 100 for k in range(200)})], axis=1)
    msg = _fit_error(tmp_path, df, target="nope")
    assert len(msg) < 600 and "(182 more)" in msg
