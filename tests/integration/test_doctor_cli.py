"""`lstmcast doctor` and the diagnosis printed by `lstmcast train`, through the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lstmcast.cli import app
from lstmcast.model.network import LSTMForecaster
from tests.conftest import run_cli, seasonal_frame

DATA = ["--time-col", "time", "--target", "y", "--horizon", "6", "--window", "24", "--season", "24"]
SMALL = ["--set", "model.hidden_size=16", "--set", "model.num_layers=2", "--set", "train.threads=1",
         "--set", "data.calendar=none"]  # a plain model: the calendar channels have their own doctor tests


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "s.csv"
    seasonal_frame(300).to_csv(path, index=False)
    return str(path)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_doctor_json_on_data(csv):
    r = invoke("doctor", "--data", csv, *DATA, *SMALL, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    model = LSTMForecaster(input_size=1, n_targets=1, horizon=6, hidden_size=16, num_layers=2, window=24,
                           linear_skip=True)
    assert rep["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert rep["batch_first"] is True
    assert rep["trace"][0] == {"name": "input x", "shape": [32, 24, 1], "legend": "(B, L, F)",
                               "note": "batch_first=True: batch, window steps, features (targets first)"}
    assert rep["train_windows"] > 0 and rep["windows_per_parameter"] > 0
    assert rep["ok"] is True and rep["step_seconds"] is None


def test_doctor_tables_and_measure(csv):
    r = invoke("doctor", "--data", csv, *DATA, *SMALL, "--measure")
    assert r.exit_code == 0, r.output
    for text in ("Shape trace of one training batch (batch_first=True", "(32, 24, 16)", "Parameters", "Budget",
                 "Findings", "no errors;"):
        assert text in r.stdout
    assert " ms" in r.stdout and "not measured" not in r.stdout


def test_doctor_on_a_config_alone(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  target: y\n  features: [a, b, c, d, e, f, g, h, i]\n  window: 20\n"
                   "model:\n  hidden_size: 64\n  num_layers: 2\n  bidirectional: true\ntrain:\n  device: cpu\n")
    r = invoke("doctor", "-c", str(cfg), "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    shapes = {row["name"]: row["shape"] for row in rep["trace"]}
    assert shapes["lstm output"] == [32, 20, 128]
    assert rep["train_windows"] is None and rep["source"].startswith("config only")


def test_doctor_error_exits_2_with_the_text_train_stops_with(csv, tmp_path):
    bad = ["--set", "model.num_layers=1", "--set", "model.dropout=0.2"]
    doc = invoke("doctor", "--data", csv, *DATA, *bad)
    assert doc.exit_code == 2, doc.output
    text = ("model.dropout=0.2 has no effect with model.num_layers=1 (LSTM dropout acts between layers): "
            "set model.num_layers>=2 or model.dropout=0")
    assert f"error: {text}" in doc.stderr
    assert "1 error(s): training would stop" in doc.stdout
    train = invoke("train", "--data", csv, *DATA, *bad, "--run", str(tmp_path / "r"))
    assert train.exit_code == 2
    assert f"error (ConfigError): {text}" in train.stderr


def test_doctor_too_short_series_in_a_subprocess(tmp_path):
    path = tmp_path / "short.csv"
    seasonal_frame(70).to_csv(path, index=False)
    args = ("--data", str(path), "--time-col", "time", "--target", "y", "--horizon", "6", "--window", "48")
    r = run_cli("doctor", *args, "--json")
    assert r.returncode == 2, r.stderr
    rep = json.loads(r.stdout)
    errors = [f for f in rep["findings"] if f["severity"] == "error"]
    assert [f["code"] for f in errors] == ["series-too-short"]
    text = f"{errors[0]['message']}: {errors[0]['fix']}"
    assert f"error: {text}" in r.stderr
    train = invoke("train", *args, "--run", str(tmp_path / "r"))
    assert train.exit_code == 3 and f"error (DataError): {text}" in train.stderr


def test_train_prints_and_writes_the_diagnosis(csv, tmp_path):
    run = tmp_path / "run"
    r = invoke("train", "--data", csv, *DATA, *SMALL, "--set", "train.max_epochs=3", "--run", str(run))
    assert r.exit_code == 0, r.output
    diag = json.loads((run / "diagnosis.json").read_text())
    assert diag["verdict"] in {"converged", "still-improving", "overfitting", "underfitting", "unstable",
                              "inconclusive", "loses-to-baseline"}
    assert diag["epochs"] == 3 and diag["findings"]
    assert f"diagnosis: {diag['summary']}" in r.stdout
    first = diag["findings"][0]
    assert f"[{first['severity']}] {first['message']}" in r.stdout
