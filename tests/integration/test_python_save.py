"""Forecaster.save writes the run folder `lstmcast train` writes (issue 22 item 8): metrics, backtest.csv,
forecast, plots, diagnosis and report.html, so `lstmcast report` of a Python-saved run is not empty."""

from __future__ import annotations

import json

import lstmcast
from lstmcast import Forecaster
from tests.conftest import run_cli, seasonal_frame, small_config


def test_python_save_writes_a_complete_run_folder_the_report_reads(tmp_path):
    df = seasonal_frame(300)
    fc = Forecaster(small_config()).fit(df, progress=False)
    run = tmp_path / "py-run"
    fc.save(run)
    for name in ("model.safetensors", "meta.json", "metrics.json", "backtest.csv", "forecast.csv", "forecast.png",
                 "loss.png", "diagnosis.json", "report.html", "complete.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == fc.backtest_.metrics and set(metrics) == {"model", "naive", "seasonal_naive"}
    html = (run / "report.html").read_text()
    assert "seasonal_naive" in html and "data:image/png;base64" in html  # the backtest table and the plots
    res = run_cli("report", str(run))
    assert res.returncode == 0, res.stderr
    assert lstmcast.load(run).predict(df).equals(fc.predict())


def test_save_without_outputs_writes_the_model_files_only(tmp_path):
    fc = Forecaster(small_config()).fit(seasonal_frame(300), progress=False)
    fc.save(tmp_path / "m", outputs=False)
    assert (tmp_path / "m" / "manifest.json").is_file() and not (tmp_path / "m" / "metrics.json").exists()
