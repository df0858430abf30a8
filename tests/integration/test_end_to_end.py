"""Train -> backtest -> forecast -> save -> load, through the API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import lstmcast
from lstmcast import Forecaster
from tests.conftest import run_cli, seasonal_frame, small_config


@pytest.mark.slow
def test_default_model_beats_seasonal_naive_on_noisy_seasonal_series():
    # default architecture and training settings; only window/horizon/season and an epoch cap given
    # noise plus a slow trend: seasonal naive pays for both, a good forecaster only for the noise
    df = seasonal_frame(n=1200, period=24, noise=0.3, seed=3, trend=0.004)
    cfg = {"data": {"time_col": "time", "target": "y", "horizon": 12, "season": 24},
           "train": {"max_epochs": 15}}
    metrics = Forecaster(cfg).fit(df).backtest()
    model, snaive = metrics["model"]["MASE"], metrics["seasonal_naive"]["MASE"]
    assert model < 0.75 * snaive, metrics


def test_save_load_round_trip_predicts_identically(tmp_path):
    df = seasonal_frame(300)
    fc = Forecaster(small_config()).fit(df)
    fc.save(tmp_path / "run")
    loaded = lstmcast.load(tmp_path / "run")
    pd.testing.assert_frame_equal(fc.predict(df), loaded.predict(df))
    assert fc.backtest(df) == loaded.backtest(df)
    assert loaded.meta_.window == 24 and loaded.config_.data.window == 24


def test_same_seed_gives_the_same_loss_curve():
    df = seasonal_frame(300)
    a = Forecaster(small_config()).fit(df).history_
    b = Forecaster(small_config()).fit(df).history_
    c = Forecaster(small_config(train={"seed": 1})).fit(df).history_
    assert [h["train_loss"] for h in a] == [h["train_loss"] for h in b]
    assert [h["val_loss"] for h in a] == [h["val_loss"] for h in b]
    assert [h["train_loss"] for h in a] != [h["train_loss"] for h in c]


def test_predict_uses_given_recent_data_and_original_units():
    df = seasonal_frame(300)
    fc = Forecaster(small_config()).fit(df)
    shifted = df.assign(y=df["y"] + 1000.0)  # same shape, another level: forecasts must follow it
    out_a, out_b = fc.predict(df), fc.predict(shifted)
    assert (out_b["y"] - out_a["y"]).between(900, 1100).all()


def test_backtest_reports_model_and_both_baselines_on_the_same_origins():
    df = seasonal_frame(400)
    fc = Forecaster(small_config()).fit(df)
    metrics = fc.backtest()
    assert set(metrics) == {"model", "naive", "seasonal_naive"}
    for row in metrics.values():
        assert set(row) == {"MAE", "RMSE", "sMAPE", "MASE"} and all(np.isfinite(v) for v in row.values())
    bt = fc.backtest_
    n_test_start = fc.meta_.val_end[0]
    assert (bt.origins >= n_test_start).all() and (bt.origins + 6 <= 400).all()
    assert bt.forecasts["model"].shape == bt.forecasts["naive"].shape == bt.actual.shape


def test_cli_train_evaluate_predict_end_to_end(tmp_path):
    csv = tmp_path / "load.csv"
    df = seasonal_frame(360)
    df["temp"] = np.cos(np.arange(len(df)) / 5.0)
    df.to_csv(csv, index=False)
    run = tmp_path / "run"
    r = run_cli("train", "--data", str(csv), "--time-col", "time", "--target", "y", "--features", "temp",
                "--window", "24", "--horizon", "6", "--set", "train.max_epochs=2", "--set", "model.hidden_size=8",
                "--run", str(run))
    assert r.returncode == 0, r.stderr
    assert f"run folder: {run}" in r.stdout
    for name in ("config.yaml", "model.safetensors", "scaler.json", "meta.json", "metrics.json",
                 "forecast.csv", "forecast.png", "loss.png", "backtest.csv"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"model", "naive", "seasonal_naive"}
    r = run_cli("evaluate", str(run))
    assert r.returncode == 0, r.stderr
    assert "seasonal_naive" in r.stdout
    out = tmp_path / "next.csv"
    r = run_cli("predict", str(run), "--data", str(csv), "--out", str(out))
    assert r.returncode == 0, r.stderr
    pred = pd.read_csv(out, parse_dates=["time"])
    assert list(pred.columns) == ["time", "y"] and len(pred) == 6
    assert pred["time"].iloc[0] == df["time"].iloc[-1] + pd.Timedelta("1h")


def test_cli_refuses_to_overwrite_a_run_and_exits_2(tmp_path):
    df = seasonal_frame(300)
    fc = Forecaster(small_config()).fit(df)
    fc.save(tmp_path / "run")
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    r = run_cli("train", "--data", str(csv), "--time-col", "time", "--target", "y", "--run", str(tmp_path / "run"))
    assert r.returncode == 2
    assert "already holds a trained run" in r.stderr
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_cli_config_error_reports_unknown_key_with_suggestion(tmp_path):
    r = run_cli("train", "--set", "model.hiden_size=128", "--run", str(tmp_path / "r"))
    assert r.returncode == 2
    assert "unknown key 'model.hiden_size'" in r.stderr and "did you mean 'model.hidden_size'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_demo_with_no_arguments_uses_bundled_series(tmp_path):
    r = run_cli("train", "--run", str(tmp_path / "demo"), "--set", "train.max_epochs=2")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "demo" / "meta.json").read_text())
    assert meta["targets"] == ["co2"] and meta["freq"].startswith("W") and meta["season"] == 52
    r = run_cli("predict", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "demo" / "forecast.csv")) == 52
