"""data.shard_series (issue 14) end to end: `lstmcast train --nproc 2` on a folder of Parquet files, each rank
reading only its own series (gloo, 2 ranks on localhost), gives the run folder of every series: scaler.json
equal to a one-process run's, forecast.csv and backtest.csv with all series, the baselines' metrics equal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import run_cli, seasonal_frame, small_config

pytestmark = pytest.mark.slow
IDS = [f"s{i}" for i in range(8)]


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of 3 Parquet files holding 8 series on different scales, and the same rows in one file."""
    frames = []
    for i, sid in enumerate(IDS):
        f = seasonal_frame(300, seed=i)
        f["y"] = f["y"] * (1 + i) + 5 * i
        frames.append(f.assign(sid=sid))
    (tmp_path / "data").mkdir()
    for k in range(3):
        pd.concat(frames[k::3]).to_parquet(tmp_path / "data" / f"part-{k}.parquet", index=False)
    pd.concat(frames).to_parquet(tmp_path / "all.parquet", index=False)
    configs = []
    for name, path, shard in (("two", tmp_path / "data", True), ("one", tmp_path / "all.parquet", False)):
        cfg = small_config(train={"precision": "fp32", "threads": 1, "max_epochs": 2})
        cfg["data"].update(path=str(path), id_col="sid", shard_series=shard)
        cfg["monitor"] = {"tensorboard": False}
        configs.append(tmp_path / f"{name}.yaml")
        configs[-1].write_text(yaml.safe_dump(cfg))
    return configs[0], configs[1]


def test_two_ranks_read_their_own_series_and_write_every_series_outputs(tmp_path):
    two_cfg, one_cfg = _setup(tmp_path)
    two = run_cli("-v", "train", "-c", str(two_cfg), "--run", str(tmp_path / "two"), "--nproc", "2")
    assert two.returncode == 0, two.stderr
    reads = dict(re.findall(r"rank (\d) of 2 reads 4 of 8 series: (\d+) rows", two.stderr))
    assert reads == {"0": "1200", "1": "1200"}  # each rank read its 4 series' 4 x 300 rows, not the 2400
    one = run_cli("train", "-c", str(one_cfg), "--run", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    runs = {r: tmp_path / r for r in ("one", "two")}
    scaler = {r: json.loads((p / "scaler.json").read_text()) for r, p in runs.items()}
    assert scaler["two"]["ids"] == scaler["one"]["ids"] == IDS
    assert scaler["two"]["mean"] == scaler["one"]["mean"]  # per series, each fitted where it was read
    assert scaler["two"]["std"] == scaler["one"]["std"]
    meta = {r: json.loads((p / "meta.json").read_text()) for r, p in runs.items()}
    assert meta["two"]["world_size"] == 2
    for key in ("ids", "lengths", "train_end", "val_end", "last_time", "anchor", "window"):
        assert meta["two"][key] == meta["one"][key], key
    forecast = {r: pd.read_csv(p / "forecast.csv") for r, p in runs.items()}
    assert forecast["two"]["sid"].tolist() == forecast["one"]["sid"].tolist()  # every series, in order
    assert forecast["two"]["time"].tolist() == forecast["one"]["time"].tolist()
    rows = {r: pd.read_csv(p / "backtest.csv") for r, p in runs.items()}
    assert rows["two"][["series", "origin", "step"]].equals(rows["one"][["series", "origin", "step"]])
    assert rows["two"]["naive"].tolist() == rows["one"]["naive"].tolist()
    metrics = {r: json.loads((p / "metrics.json").read_text()) for r, p in runs.items()}
    assert set(metrics["two"]["per_series"]) == set(IDS)
    for method in ("naive", "seasonal_naive"):  # the model differs (other batches); the baselines must not
        assert metrics["two"][method] == pytest.approx(metrics["one"][method], rel=1e-12)
        for sid in IDS:
            assert metrics["two"]["per_series"][sid][method] == pytest.approx(
                metrics["one"]["per_series"][sid][method], rel=1e-12)
    assert (tmp_path / "two" / "complete.json").is_file()
    # the gathered forecast is the saved model's forecast of every series, as one process predicts it
    out = run_cli("predict", str(tmp_path / "two"), "--data", str(tmp_path / "all.parquet"), "--out",
                  str(tmp_path / "again.csv"))
    assert out.returncode == 0, out.stderr
    again = pd.read_csv(tmp_path / "again.csv")
    assert again["sid"].tolist() == forecast["two"]["sid"].tolist()
    assert again["y"].tolist() == pytest.approx(forecast["two"]["y"].tolist(), rel=1e-6)
    # outputs left unwritten cannot be finished by one process: refused with the way to a forecast
    (tmp_path / "two" / "complete.json").unlink()
    out = run_cli("train", "--resume", str(tmp_path / "two"))
    assert out.returncode == 2 and "one process cannot rewrite them" in out.stderr, out.stderr


def test_a_csv_table_with_shard_series_is_refused_before_training(tmp_path):
    _, one_cfg = _setup(tmp_path)
    cfg = yaml.safe_load(one_cfg.read_text())
    pd.read_parquet(cfg["data"]["path"]).to_csv(tmp_path / "all.csv", index=False)
    cfg["data"].update(path=str(tmp_path / "all.csv"), shard_series=True)
    (tmp_path / "csv.yaml").write_text(yaml.safe_dump(cfg))
    out = run_cli("train", "-c", str(tmp_path / "csv.yaml"), "--run", str(tmp_path / "r"), "--nproc", "2")
    assert out.returncode == 2, out.stderr
    assert "data.shard_series=true reads a Parquet file or a folder of Parquet files" in out.stderr


def test_fewer_series_than_ranks_is_refused(tmp_path):
    two_cfg, _ = _setup(tmp_path)
    (tmp_path / "few").mkdir()
    one_series = pd.read_parquet(tmp_path / "all.parquet").query("sid == 's0'")
    one_series.to_parquet(tmp_path / "few" / "part.parquet", index=False)
    cfg = yaml.safe_load(two_cfg.read_text())
    cfg["data"]["path"] = str(tmp_path / "few")
    (tmp_path / "few.yaml").write_text(yaml.safe_dump(cfg))
    out = run_cli("train", "-c", str(tmp_path / "few.yaml"), "--run", str(tmp_path / "r"), "--nproc", "2")
    assert out.returncode == 2, out.stderr
    assert "holds 1 series for 2 ranks" in out.stderr and "set data.shard_series=false" in out.stderr  # R19
    assert "was lost" not in out.stderr  # both ranks refused; neither waited on the other


def test_one_ranks_bad_series_stops_every_rank_with_its_data_error(tmp_path):
    two_cfg, _ = _setup(tmp_path)
    table = pd.read_parquet(tmp_path / "all.parquet")
    bad = pd.concat([table, table[table["sid"] == "s1"].iloc[[10]]])  # s1 (rank 1's) repeats a timestamp
    (tmp_path / "bad").mkdir()
    bad.to_parquet(tmp_path / "bad" / "part.parquet", index=False)
    cfg = yaml.safe_load(two_cfg.read_text())
    cfg["data"]["path"] = str(tmp_path / "bad")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    out = run_cli("train", "-c", str(tmp_path / "bad.yaml"), "--run", str(tmp_path / "r"), "--nproc", "2")
    assert out.returncode == 3, out.stderr  # the data's exit code, not 130 for a lost peer
    assert "rank 1 of 2: " in out.stderr and "'s1'" in out.stderr
    assert "was lost" not in out.stderr
