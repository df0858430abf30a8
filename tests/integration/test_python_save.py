"""Forecaster.save writes the run folder `lstmcast train` writes (issue 22 item 8): metrics, backtest.csv,
forecast, plots, diagnosis and report.html, so `lstmcast report` of a Python-saved run is not empty; and
`lstmcast evaluate` steers the backtest windows of such a run (item 7): --start, --stride, --windows, --refit,
every window's forecasts written beside the metrics, the held-out backtest exactly at the defaults."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import lstmcast
from lstmcast import Forecaster
from lstmcast.errors import ConfigError
from lstmcast.workflow import evaluate_run
from tests.conftest import run_cli, seasonal_frame, small_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    df = seasonal_frame(300)
    df.to_csv(folder / "s.csv", index=False)
    fc = Forecaster(small_config()).fit(str(folder / "s.csv"), progress=False)
    fc.save(folder / "run")
    return fc, folder / "run", df


def test_python_save_writes_a_complete_run_folder_the_report_reads(saved):
    fc, run, df = saved
    for name in ("model.safetensors", "meta.json", "metrics.json", "backtest.csv", "forecast.csv", "forecast.png",
                 "loss.png", "diagnosis.json", "report.html", "complete.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == fc.backtest_.metrics and set(metrics) == {"model", "naive", "seasonal_naive"}
    html = (run / "report.html").read_text()
    assert "seasonal_naive" in html and "data:image/png;base64" in html  # the backtest table and the plots
    assert lstmcast.load(run).predict(df).equals(fc.predict())


def test_save_without_outputs_writes_the_model_files_only(saved, tmp_path):
    fc, _, _ = saved
    fc.save(tmp_path / "m", outputs=False)
    assert (tmp_path / "m" / "manifest.json").is_file() and not (tmp_path / "m" / "metrics.json").exists()


def test_evaluate_defaults_equal_training_and_steered_windows_are_written(saved):
    _, run, df = saved
    evaluate_run(run, name="same")  # in-process: the CLI's options are checked below, one subprocess is enough
    same = json.loads((run / "evaluations" / "same.json").read_text())
    assert same["metrics"] == json.loads((run / "metrics.json").read_text())  # today's backtest, exactly
    pd.testing.assert_frame_equal(pd.read_csv(run / "evaluations" / "same.csv"), pd.read_csv(run / "backtest.csv"))
    res = run_cli("evaluate", str(run), "--name", "steered", "--start", str(df["time"].iloc[200]), "--stride", "12",
                  "--windows", "3")
    assert res.returncode == 0, res.stderr
    assert "steered.csv" in res.stdout
    record = json.loads((run / "evaluations" / "steered.json").read_text())
    assert record["origins"] == 3 and record["windows"]["stride"] == 12 and record["forecasts"] == "steered.csv"
    frame = pd.read_csv(run / "evaluations" / "steered.csv", parse_dates=["cutoff", "origin", "time"])
    assert list(frame["origin"].unique()) == [df["time"].iloc[200 + 12 * k] for k in range(3)]
    assert len(frame) == 3 * 6 and (frame["cutoff"] < frame["origin"]).all()
    with pytest.raises(ConfigError, match="start=1.5"):
        evaluate_run(run, start=1.5)
    res = run_cli("report", str(run))  # the report of a Python-saved run lists the evaluations too
    assert res.returncode == 0, res.stderr
    assert "steered" in (run / "report.html").read_text()
