"""Steerable backtests (inference/steer.py, Forecaster.backtest / backtest_forecasts, evaluate --start ...):
at the defaults exactly the backtest `train` writes; start / stride / n_windows / refit pick the windows asked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster
from lstmcast.errors import ConfigError, DataError
from lstmcast.inference.predict import run_backtest
from lstmcast.inference.steer import Plan, parse_start, steered_backtest
from tests.conftest import seasonal_frame, small_config

H = 6


@pytest.fixture(scope="module")
def fitted() -> Forecaster:
    cfg = small_config(model={"levels": [80]}, train={"max_epochs": 1})
    return Forecaster(cfg).fit(seasonal_frame(300), progress=False)


def test_defaults_equal_the_backtest_of_training_exactly(fitted):
    fc = fitted
    series = fc.series(None)
    today = run_backtest(fc.backtest_model_, series, fc.meta_, fc.scaler_, fc.config_)  # what train scores
    assert fc.backtest() == today.metrics
    np.testing.assert_array_equal(fc.backtest_.origins, today.origins)
    for name, f in today.forecasts.items():
        np.testing.assert_array_equal(fc.backtest_.forecasts[name], f)
    np.testing.assert_array_equal(fc.backtest_.quantiles["model"], today.quantiles["model"])
    frame = fc.backtest_forecasts()
    pd.testing.assert_frame_equal(frame, today.frame(series, fc.meta_))  # backtest.csv's rows
    # the interval columns and the cutoff (the last observed time, one step before the origin)
    assert {"model_lo_80", "model_hi_80", "seasonal_naive_lo_80", "seasonal_naive_hi_80"} <= set(frame.columns)
    assert (frame["model_lo_80"] <= frame["model"]).all() and (frame["model"] <= frame["model_hi_80"]).all()
    assert (frame["origin"] - frame["cutoff"] == pd.Timedelta("1h")).all()


def test_stride_and_window_count_without_start_keep_the_end_anchored_origins(fitted):
    fc = fitted
    frame = fc.backtest_forecasts(stride=2, n_windows=3)
    origins = sorted(frame["origin"].unique())
    last = seasonal_frame(300)["time"].iloc[-H]  # the last origin whose horizon is observed
    assert origins == [last - pd.Timedelta(hours=4), last - pd.Timedelta(hours=2), last]


def test_start_as_time_fraction_and_row_go_forward_from_it(fitted):
    fc = fitted
    times = seasonal_frame(300)["time"]
    by_time = fc.backtest_forecasts(start=str(times.iloc[150]), stride=12, n_windows=4)
    assert sorted(by_time["origin"].unique()) == [times.iloc[150 + 12 * k] for k in range(4)]
    by_fraction = fc.backtest_forecasts(start=0.5, stride=12, n_windows=4)
    pd.testing.assert_frame_equal(by_fraction, by_time)  # floor(0.5 * 300) = row 150
    by_row = fc.backtest_forecasts(start=150, stride=12, n_windows=4)
    pd.testing.assert_frame_equal(by_row, by_time)
    # the same model forecasts the same origin the same way, whichever windows surround it
    everything = fc.backtest_forecasts(start=150, stride=1)
    assert everything["origin"].nunique() == 300 - H - 150 + 1
    merged = by_time.merge(everything, on=["origin", "step"], suffixes=("", "_all"))
    assert len(merged) == len(by_time)
    np.testing.assert_allclose(merged["model"], merged["model_all"], rtol=1e-6)


def test_start_before_enough_history_is_clipped_and_past_the_end_refused(fitted):
    fc = fitted
    early = fc.backtest_forecasts(start=0, stride=100)
    assert early["origin"].min() == seasonal_frame(300)["time"].iloc[24]  # window 24 = season 24 rows first
    with pytest.raises(DataError, match="no backtest window from start"):
        fc.backtest(start="2030-01-01")


@pytest.mark.parametrize("kwargs, match", [({"stride": 0}, "stride must be"), ({"n_windows": 0}, "n_windows"),
                                           ({"start": 1.5}, "start=1.5"), ({"start": "not a time"}, "not a time")])
def test_bad_steering_is_a_config_error(fitted, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fitted.backtest(**kwargs)


def test_parse_start_reads_the_cli_text():
    assert parse_start("0.6") == 0.6 and parse_start("120") == 120 and parse_start("2024-03-01") == "2024-03-01"
    assert parse_start(None) is None


def test_refit_trains_each_window_on_the_rows_before_it_only(fitted):
    fc = fitted
    series = fc.series(None)
    seen = []

    def fit(cut, cfg):
        seen.append((len(cut.values[0]), cfg.data.test_fraction, cfg.train.refit))
        return fc.backtest_model_, fc.meta_, fc.scaler_
    bt = steered_backtest(fc.backtest_model_, series, fc.meta_, fc.scaler_, fc.config_,
                          Plan(start=200, stride=30, n_windows=3, refit=True), fit=fit)
    assert list(bt.origins) == [200, 230, 260]
    # each training holds the rows up to the window's last actual; its test split is that horizon alone
    # and nothing is refitted on it: the model only trains (and stops early) on rows before the window
    assert [s[0] for s in seen] == [206, 236, 266]
    assert all(s[1] < 1e-6 and s[2] is False for s in seen)
    plain = steered_backtest(fc.backtest_model_, series, fc.meta_, fc.scaler_, fc.config_,
                             Plan(start=200, stride=30, n_windows=3))
    # the same model given back (one forward per window, not one for all: float32 rounding differs)
    np.testing.assert_allclose(bt.forecasts["model"], plain.forecasts["model"], rtol=1e-5)
    np.testing.assert_array_equal(bt.actual, plain.actual)


def test_refit_needs_a_trainer():
    with pytest.raises(ConfigError, match="needs a way to train"):
        steered_backtest(None, None, None, None, None, Plan(refit=True))


@pytest.mark.slow
def test_refit_backtest_really_retrains_per_window(fitted):
    frame = fitted.backtest_forecasts(refit=True, n_windows=2)
    assert frame["origin"].nunique() == 2 and np.isfinite(frame["model"]).all()
    assert (frame["cutoff"] < frame["origin"]).all() and "model_lo_80" in frame.columns
