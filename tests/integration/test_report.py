"""`lstmcast train` writes TensorBoard events, monitor.json and report.html; `lstmcast report RUN` rewrites it."""

from __future__ import annotations

import json

import torch

from tests.conftest import run_cli, seasonal_frame, small_config


def _csv(tmp_path):
    data = tmp_path / "series.csv"
    seasonal_frame(n=400).to_csv(data, index=False)
    return data


def test_train_run_writes_tensorboard_monitor_and_report(tmp_path):
    from lstmcast.config import validate_config
    from lstmcast.workflow import train_run

    torch.set_num_threads(1)
    cfg = validate_config(small_config(data={"path": str(_csv(tmp_path))}, train={"max_epochs": 2, "threads": 1}))
    run = tmp_path / "run"
    fc, metrics = train_run(cfg, run)
    assert list((run / "tb").glob("events.out.tfevents.*"))
    monitor = json.loads((run / "monitor.json").read_text())
    assert [p["epoch"] for p in monitor["probes"]] == [1, 2] and monitor["tensorboard"] is True
    assert monitor["probes"][-1]["recompute_error"] < 1e-5
    page = (run / "report.html").read_text()
    for section in ("summary", "diagnosis", "metrics", "curves", "forecast", "monitor", "doctor", "data", "config"):
        assert f'<section id="{section}">' in page
    assert f'data-value="{metrics["model"]["MASE"]!r}"' in page
    assert json.loads((run / "doctor.json").read_text())["parameters"]["total"] == fc.meta_.n_parameters
    assert json.loads((run / "diagnosis.json").read_text())["verdict"] == fc.diagnosis_.verdict


def test_cli_train_no_tensorboard_then_report_command(tmp_path):
    from typer.testing import CliRunner

    from lstmcast.cli import app

    torch.set_num_threads(1)
    run, cli = tmp_path / "run", CliRunner()
    res = cli.invoke(app, ["train", "--data", str(_csv(tmp_path)), "--time-col", "time", "--target", "y",
                           "--window", "24", "--horizon", "6", "--season", "24", "--set", "train.max_epochs=2",
                           "--set", "train.threads=1", "--set", "model.hidden_size=8", "--set", "model.dropout=0",
                           "--set", "model.num_layers=1", "--no-tensorboard", "--run", str(run)])
    assert res.exit_code == 0, res.output
    assert f"report: {run / 'report.html'}" in res.output and "tensorboard --logdir" not in res.output
    assert not (run / "tb").exists()
    assert json.loads((run / "monitor.json").read_text())["tensorboard"] is False
    page = (run / "report.html").read_text()

    (run / "report.html").unlink()
    other = tmp_path / "elsewhere.html"
    res = cli.invoke(app, ["report", str(run), "--out", str(other)])
    assert res.exit_code == 0, res.output
    assert f"report written to {other}" in res.output
    assert not (run / "report.html").exists()
    assert other.read_text() == page


def test_report_of_a_partial_folder_names_what_is_missing(tmp_path):
    from lstmcast.report.html import write_report

    metrics = {"model": {"MAE": 1.25, "RMSE": 2.5, "sMAPE": 3.0, "MASE": 0.5},
               "seasonal_naive": {"MAE": 2.0, "RMSE": 3.0, "sMAPE": 4.0, "MASE": 1.0}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    page = write_report(tmp_path).read_text()
    assert "monitor.json is not in the run folder" in page and "loss.png is not in the run folder" in page
    assert 'data-value="0.5">0.5</td>' in page and '<td class="num best" data-value="1.25">1.25</td>' in page
    assert "the model beats the best baseline (seasonal_naive, 1)" in page
    # self-contained: no address outside the page, and a policy that forbids fetching one
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'; img-src data:" in page


def test_report_refuses_a_folder_without_a_run(tmp_path):
    res = run_cli("report", str(tmp_path))
    assert res.returncode == 4
    assert "holds no lstmcast run (no meta.json, metrics.json or history.json)" in res.stderr
    res = run_cli("report", str(tmp_path / "nope"))
    assert res.returncode == 4 and "does not exist" in res.stderr


def test_the_report_names_the_interval_method_and_auto_s_scores():
    from lstmcast.report.html import data_section

    meta = {"layout": "single", "targets": ["y"], "horizon": 6, "window": 24,
            "intervals": {"levels": [80, 95], "method": "residual", "calibration_windows": 31,
                          "method_scores": {"quantile": 2.5, "residual": 2.0}}}
    html = data_section(meta, [])
    assert "80%, 95%" in html and "residual: the median" in html and "31 validation windows" in html
    assert "quantile 2.5" in html and "residual 2" in html
    assert "intervals" not in data_section({**meta, "intervals": None}, [])
