"""The Spark engine end to end in local mode (issue 26): the same forecasts and backtest rows as one process,
bad series in the errors table, a killed worker retried without duplicates, the CLI's resumable output."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("the Spark engine needs a Java 17+ runtime (java is not on PATH)", allow_module_level=True)

from lstmcast import Forecaster
from lstmcast.spark import backtest, local_session, predict_dataset, predict_with_errors, read_manifest

pytestmark = pytest.mark.slow
H = 4


def panel(n_series: int, seed: int = 0, min_len: int = 24, max_len: int = 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Daily series of mixed lengths and start days with a known-future driver x and two statics; returns the
    history and the next H rows of x (the known future)."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(min_len, max_len, n_series) + H
    k = np.repeat(np.arange(n_series), lens)
    t = np.concatenate([np.arange(n) for n in lens])
    start = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.repeat(rng.integers(0, 30, n_series), lens), unit="D")
    x = rng.normal(size=len(t))
    df = pd.DataFrame({"time": start + pd.to_timedelta(t, unit="D"), "id": np.char.add("s", k.astype(str)),
                       "y": 10 + k % 7 + 2 * np.sin(2 * np.pi * t / 7) + x + 0.1 * rng.normal(size=len(t)), "x": x,
                       "region": np.where(k % 2 == 0, "north", "south"), "capacity": (k % 5).astype(float)})
    last = df.groupby("id").cumcount(ascending=False) < H
    return df[~last].reset_index(drop=True), df[last][["time", "id", "x"]].reset_index(drop=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """Known-future covariate, statics and 80% intervals, trained on 40 series (most predicted ones are new)."""
    hist, _ = panel(60, seed=1, min_len=40, max_len=60)
    cfg = {"data": {"time_col": "time", "id_col": "id", "target": "y", "horizon": H, "window": 14, "season": 7,
                    "calendar": "none", "future_features": ["x"], "static_features": ["region", "capacity"],
                    "split": "fraction"},  # several backtest origins a series (a table's default: one)
           "model": {"hidden_size": 8, "num_layers": 1, "levels": [80]},
           "train": {"max_epochs": 1, "min_steps": 0, "min_epoch_steps": 2, "refit": False, "seed": 0}}
    path = tmp_path_factory.mktemp("spark") / "run"
    Forecaster(cfg).fit(hist).save(path)
    return path


@pytest.fixture(scope="module")
def spark():
    session = local_session("local[2]", max_failures=2)  # local[2,2]: a failed task gets one retry
    yield session
    session.stop()


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


def _assert_same(got: pd.DataFrame, want: pd.DataFrame, keys: list[str]) -> None:
    assert list(got.columns) == list(want.columns)
    got, want = _sorted(got, keys), _sorted(want, keys)
    assert len(got) == len(want) and not got.duplicated(keys).any()
    for c in want.columns:
        if want[c].dtype.kind == "f":  # float32 model outputs: batches of other sizes differ in the last ulps
            np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=1e-6, atol=1e-6, err_msg=c)
        else:
            assert (got[c].astype(str).to_numpy() == want[c].astype(str).to_numpy()).all(), c


def _with_bad_series(hist: pd.DataFrame, fut: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three series that cannot be forecast, each for its own reason."""
    short = hist[hist.id == "s0"].tail(5).assign(id="bad-short")
    nan = hist[hist.id == "s1"].assign(id="bad-nan")
    nan.loc[nan.index[-2], "y"] = np.nan
    nofut = hist[hist.id == "s2"].assign(id="bad-nofuture")
    fut_bad = pd.concat([fut[fut.id == "s0"].assign(id="bad-short"), fut[fut.id == "s1"].assign(id="bad-nan")])
    return pd.concat([hist, short, nan, nofut], ignore_index=True), pd.concat([fut, fut_bad], ignore_index=True)


def test_forecasts_equal_one_process_for_thousands_of_series_and_bad_series_become_error_rows(run, spark):
    hist, fut = panel(3000)
    want = Forecaster.load(run).predict(hist, future=fut)
    all_hist, all_fut = _with_bad_series(hist, fut)
    res = predict_with_errors(run, spark.createDataFrame(all_hist), spark.createDataFrame(all_fut), groups=6)
    got, errors = res.forecasts.toPandas(), res.errors.toPandas()
    assert list(want.columns) == ["id", "time", "y", "y_lo_80", "y_hi_80"]
    _assert_same(got, want, ["id", "time"])
    assert got.groupby("id").size().eq(H).all() and got["id"].nunique() == 3000
    reasons = dict(zip(errors["id"], errors["reason"]))
    assert sorted(reasons) == ["bad-nan", "bad-nofuture", "bad-short"]
    assert "too short" in reasons["bad-short"] and "DataError" in reasons["bad-nan"]
    assert "future" in reasons["bad-nofuture"]


def test_backtest_rows_equal_one_process(run, spark):
    hist, _ = panel(200, seed=3, min_len=90, max_len=120)
    fc = Forecaster.load(run)
    fc.backtest(hist)
    from lstmcast.inference.predict import load_new_series

    want = fc.backtest_.frame(load_new_series(hist, fc.config_, fc.meta_), fc.meta_)
    got = backtest(run, spark.createDataFrame(hist), groups=3).toPandas()
    assert len(want) > 200 * H
    _assert_same(got, want, ["series", "origin", "step"])


def _python_workers() -> list[int]:
    """pids of pyspark's forked Python workers (children of the pyspark.daemon process)."""
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"pyspark.daemon" in cmd:
            procs[int(pid)] = ppid
    return [pid for pid, ppid in procs.items() if ppid in procs]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _kill_a_busy_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Python worker seen running (state R, also when waiting for a loaded CPU): one that is
    working on a task; an idle worker sleeps on its socket (S)."""
    while not stop.is_set() and not killed:
        for pid in _python_workers():
            if _state(pid) == "R" and _state(pid) == "R":
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.02)


def test_a_worker_killed_mid_task_is_retried_without_duplicate_or_missing_forecasts(run, spark):
    hist, fut = panel(6000, seed=5)
    want = Forecaster.load(run).predict(hist, future=fut)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_busy_worker, args=(stop, killed))
    killer.start()
    try:
        res = predict_with_errors(run, spark.createDataFrame(hist), spark.createDataFrame(fut), groups=2)
        got = res.forecasts.toPandas()
        assert res.errors.count() == 0
    finally:
        stop.set()
        killer.join()
    assert killed, "no busy Python worker was seen to kill"
    _assert_same(got, want, ["id", "time"])


def test_cli_writes_parts_and_the_manifest_last_and_a_rerun_resumes_the_unfinished_parts(run, spark, tmp_path):
    hist, fut = panel(800, seed=7)
    data, future = tmp_path / "data", tmp_path / "future"
    hist.to_parquet(data, partition_cols=["region"])  # hive-partitioned: region=north/, region=south/
    future.mkdir()
    fut.to_parquet(future / "part-0.parquet")
    fut_dir = future
    out = tmp_path / "out"
    stops = []

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            stops.append(total)
            raise KeyboardInterrupt  # the driver killed between two jobs
    with pytest.raises(KeyboardInterrupt):
        predict_dataset(run, data, out, fut_dir, spark=spark, rows_per_part=8_000, parts_per_job=1,
                        on_part=stop_after_two)
    total = stops[0]
    assert total >= 4 and read_manifest(out) is None  # partial: no manifest
    assert len(list((out / "_done").iterdir())) == 2
    res = predict_dataset(run, data, out, fut_dir, spark=spark, rows_per_part=8_000, parts_per_job=2)
    assert (res.computed, res.skipped) == (total - 2, 2)
    m = read_manifest(out)
    want = Forecaster.load(run).predict(hist, future=fut)
    assert (m["forecast_rows"], m["series"], m["errors"], m["parts"]) == (len(want), 800, 0, total)
    got = pd.read_parquet(out / "forecasts").drop(columns=["part"])
    _assert_same(got, want, ["id", "time"])
    again = predict_dataset(run, data, out, fut_dir, spark=spark)
    assert (again.computed, again.skipped) == (0, total)
    from typer.testing import CliRunner

    from lstmcast.cli import app

    other = CliRunner().invoke(app, ["predict", str(run), "--data", str(data), "--engine", "spark",
                                     "--out", str(out)])  # no --future: another job's inputs
    assert other.exit_code == 2 and "another job" in other.output


def test_by_default_the_parts_run_in_one_job_and_rows_per_job_splits_them_with_the_same_output(run, spark,
                                                                                                 tmp_path):
    hist, fut = panel(400, seed=11)
    data, future = tmp_path / "data", tmp_path / "future"
    data.mkdir()
    future.mkdir()
    hist.to_parquet(data / "part-0.parquet")
    fut.to_parquet(future / "part-0.parquet")
    jobs: list[tuple[int, int]] = []
    one = predict_dataset(run, data, tmp_path / "one", future, spark=spark, rows_per_part=3_000,
                          on_part=lambda done, total: jobs.append((done, total)))
    parts = one.manifest["parts"]
    assert parts >= 4 and jobs == [(parts, parts)]  # every part in the first (only) job
    calls: list[tuple[int, int]] = []
    split = predict_dataset(run, data, tmp_path / "split", future, spark=spark, rows_per_part=3_000,
                            rows_per_job=len(hist) // 3 + 1, on_part=lambda done, total: calls.append((done, total)))
    assert split.manifest["parts"] == parts and len(calls) >= 2 and calls[-1] == (parts, parts)
    want = pd.read_parquet(tmp_path / "one" / "forecasts").drop(columns=["part"])
    got = pd.read_parquet(tmp_path / "split" / "forecasts").drop(columns=["part"])
    assert len(want) == 400 * H
    _assert_same(got, want, ["id", "time"])
