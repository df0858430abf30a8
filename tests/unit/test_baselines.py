"""Naive and seasonal-naive baselines against hand-computed forecasts (evaluation.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmcast.inference.backtest import naive, seasonal_naive

Y = np.arange(20.0).reshape(20, 1) * 10  # y[i] = 10 i


def test_naive_repeats_the_last_observed_value():
    out = naive(Y, 10, 4)
    assert out.shape == (4, 1)
    np.testing.assert_array_equal(out[:, 0], [90.0] * 4)


def test_naive_keeps_every_target_channel():
    y = np.column_stack([np.arange(8.0), -np.arange(8.0)])
    np.testing.assert_array_equal(naive(y, 5, 2), [[4.0, -4.0], [4.0, -4.0]])


def test_seasonal_naive_repeats_the_last_observed_season():
    # season 3, origin 10: the last season is y[7], y[8], y[9]; horizon 5 wraps into it again
    np.testing.assert_array_equal(seasonal_naive(Y, 10, 5, 3)[:, 0], [70.0, 80.0, 90.0, 70.0, 80.0])
    # horizon shorter than the season
    np.testing.assert_array_equal(seasonal_naive(Y, 12, 2, 4)[:, 0], [80.0, 90.0])
    # season 1 is the naive forecast
    np.testing.assert_array_equal(seasonal_naive(Y, 10, 3, 1), naive(Y, 10, 3))


@settings(max_examples=100, deadline=None)
@given(season=st.integers(1, 24), horizon=st.integers(1, 60), extra=st.integers(0, 50))
def test_baselines_read_only_the_past_and_follow_the_seasonal_phase(season, horizon, extra):
    t = season + extra
    y = np.random.default_rng(season).normal(size=(t + horizon, 2))
    y[t:] = np.nan  # the future: reading it would leak NaN into the forecast
    snv = seasonal_naive(y, t, horizon, season)
    assert snv.shape == (horizon, 2) and np.isfinite(snv).all()
    for h in range(horizon):
        np.testing.assert_array_equal(snv[h], y[t - season + h % season])  # same phase, last season
    assert np.isfinite(naive(y, t, horizon)).all()
