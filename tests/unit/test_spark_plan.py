"""The Spark engine's pure logic, without a JVM: part planning, the output folder's records and manifest,
resume skipping, the per-series error isolation and the once-per-worker run cache (issue 26)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from lstmcast.errors import CheckpointError, ConfigError, DataError, LstmcastError
from lstmcast.run.manifest import file_sha256
from lstmcast.spark import plan, worker
from tests.conftest import ROOT


def test_parts_bound_the_rows_of_a_part_and_give_every_core_work():
    assert plan.plan_parts(1_000_000, 200_000, 4) == 5
    assert plan.plan_parts(1_000_001, 200_000, 4) == 6  # never more than rows_per_part on average
    assert plan.plan_parts(10, 200_000, 4) == 4  # small input: still one part per core
    assert plan.plan_parts(3, 200_000, 4) == 3  # never a part with no rows by construction
    assert plan.plan_parts(0, 200_000, 4) == 1
    with pytest.raises(ConfigError, match="must be >= 1"):
        plan.plan_parts(10, 0, 1)


def _plan(parts: int = 3, inputs: str = "in-a") -> plan.Plan:
    return plan.Plan(kind="predict", run="/runs/x", run_sha256="r" * 64, inputs=inputs, future=None, rows=30,
                     parts=parts)


def _write_part(out, part: int, rows: int) -> dict:
    d = plan.part_dir(out, "forecasts", part)
    d.mkdir(parents=True)
    (d / "part-0.parquet").write_bytes(b"x" * rows)
    (d / ".part-0.parquet.crc").write_bytes(b"crc")  # Hadoop's checksum files are not data
    return plan.finish_part(out, part, rows, rows, 0)


def test_a_rerun_skips_recorded_parts_and_redoes_half_written_or_changed_ones(tmp_path):
    out = tmp_path / "out"
    p = plan.start(out, _plan())
    rec0 = _write_part(out, 0, 5)
    _write_part(out, 1, 7)
    half = plan.part_dir(out, "forecasts", 2)  # a killed job: files, no record
    half.mkdir(parents=True)
    (half / "part-0.parquet").write_bytes(b"partial")
    (plan.part_dir(out, "forecasts", 1) / "part-0.parquet").write_bytes(b"changed")  # record no longer true
    assert rec0["files"] == {"forecasts/part=0/part-0.parquet": file_sha256(
        plan.part_dir(out, "forecasts", 0) / "part-0.parquet")}
    done = plan.finished_parts(out, p)
    assert list(done) == [0]
    assert not half.exists() and not plan.part_dir(out, "forecasts", 1).exists()
    assert not (out / "_done" / "part=1.json").exists()
    with pytest.raises(DataError, match=r"parts \[1, 2\] are not finished"):
        plan.write_manifest(out, p, done)
    assert plan.read_manifest(out) is None  # no manifest: a partial output is never a whole one


def test_the_manifest_is_written_last_totals_the_parts_and_catches_a_changed_file(tmp_path):
    out = tmp_path / "out"
    p = plan.start(out, _plan(parts=2))
    records = {0: _write_part(out, 0, 5), 1: _write_part(out, 1, 7)}
    m = plan.write_manifest(out, p, records)
    assert (m["forecast_rows"], m["series"], m["errors"], m["parts"]) == (12, 12, 0, 2)
    assert plan.read_manifest(out)["files"] == m["files"] and len(m["files"]) == 2
    (plan.part_dir(out, "forecasts", 1) / "part-0.parquet").write_bytes(b"tampered")
    with pytest.raises(DataError, match="changed since"):
        plan.read_manifest(out)


def test_an_output_folder_of_another_job_or_foreign_files_is_refused_untouched(tmp_path):
    out = tmp_path / "out"
    plan.start(out, _plan())
    with pytest.raises(ConfigError, match="another job.*inputs"):
        plan.start(out, _plan(inputs="in-b"))
    assert plan.start(out, _plan(parts=9)).parts == 3  # a resume keeps the stored cut into parts
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an lstmcast Spark output"):
        plan.start(other, _plan())
    assert (other / "keep.txt").read_text() == "mine" and not (other / "plan.json").exists()


def test_the_input_fingerprint_follows_the_data_files_not_hidden_ones(tmp_path):
    d = tmp_path / "data" / "region=north"
    d.mkdir(parents=True)
    (d / "a.parquet").write_bytes(b"1")
    before = plan.input_fingerprint(tmp_path / "data")
    (d / "_SUCCESS").write_bytes(b"")
    (d / ".a.parquet.crc").write_bytes(b"")
    assert plan.input_fingerprint(tmp_path / "data") == before
    (d / "b.parquet").write_bytes(b"2")
    assert plan.input_fingerprint(tmp_path / "data") != before
    with pytest.raises(DataError, match="not a folder"):
        plan.input_fingerprint(tmp_path / "nope")


def test_bad_series_are_isolated_by_halves_and_the_good_ones_kept():
    bad = {"s3", "s10"}
    calls = []

    def attempt(ids):
        calls.append(len(ids))
        if bad & set(ids):
            raise DataError(f"series {sorted(bad & set(ids))[0]!r} is too short " + "x" * 1000)
        return pd.DataFrame({"id": ids})
    ids = [f"s{i}" for i in range(16)]
    good, errors = worker.isolate(ids, attempt)
    assert sorted(pd.concat(good)["id"]) == sorted(set(ids) - bad)
    assert sorted(e[0] for e in errors) == sorted(bad)
    assert all(e[1].startswith("DataError: series") and len(e[1]) <= worker.REASON_CHARS for e in errors)
    assert len(calls) < 2 * 2 * 4 + 2  # ~ bad x log2(n) calls, not one per series
    assert worker.isolate(ids, lambda part: pd.DataFrame({"id": part}))[1] == []

    def crash(ids):
        raise RuntimeError("a bug is not a bad series")
    with pytest.raises(RuntimeError):  # only lstmcast's own errors are per-series verdicts
        worker.isolate(ids, crash)


def test_the_run_is_loaded_once_per_worker_and_refused_when_its_files_change(tmp_path, monkeypatch):
    from lstmcast import Forecaster
    from tests.conftest import seasonal_frame, small_config

    run = tmp_path / "run"
    Forecaster(small_config(train={"max_epochs": 1})).fit(seasonal_frame(200)).save(run)
    monkeypatch.setattr(worker, "_RUNS", {})
    digest = worker.manifest_digest(run)
    first = worker.cached_run(str(run), digest, 1)
    assert worker.cached_run(str(run), digest, 1) is first  # one load per worker process
    with pytest.raises(CheckpointError, match="changed after the Spark job started"):
        worker.cached_run(str(run), "0" * 64, 1)
    meta = json.loads((run / "manifest.json").read_text())
    meta["sha256"]["scaler.json"] = "0" * 64  # the files no longer match: load_run's own check refuses
    (run / "manifest.json").write_text(json.dumps(meta))
    with pytest.raises(LstmcastError):
        worker.cached_run(str(run), worker.manifest_digest(run), 1)


def test_the_cli_and_the_spark_package_import_no_pyspark_until_used():
    code = ("import sys, lstmcast.cli, lstmcast.spark; "
            "assert not any(m.startswith(('pyspark', 'py4j')) for m in sys.modules), 'pyspark loaded'")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_predict_engine_spark_refuses_missing_folders_and_an_unknown_engine_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from lstmcast.cli import app

    run = tmp_path / "run"  # never read: the flags are checked first
    res = CliRunner().invoke(app, ["predict", str(run), "--engine", "spark", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--data DATASET_DIR" in res.output
    res = CliRunner().invoke(app, ["predict", str(run), "--engine", "dask"])
    assert res.exit_code == 2 and "--engine must be local or spark" in res.output
    assert not (tmp_path / "o").exists()


def test_parts_go_to_the_fewest_jobs_that_each_read_at_most_rows_per_job():
    assert plan.parts_in_a_job(20_000_000, 101, plan.ROWS_PER_JOB) == 101  # 1M series of 20 rows: one job
    assert plan.parts_in_a_job(200_000_000, 1_000, 50_000_000) == 250  # 10M series: four jobs
    assert plan.parts_in_a_job(200_000_001, 1_000, 50_000_000) == 200  # one row more: a fifth job
    assert plan.parts_in_a_job(10, 3, 1) == 1  # more jobs than parts: one part a job
    assert plan.parts_in_a_job(0, 1, 5) == 1
    with pytest.raises(ConfigError, match="rows per job must be >= 1"):
        plan.parts_in_a_job(10, 3, 0)
