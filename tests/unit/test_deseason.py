"""Issue 20's ES-RNN-style seasonal normalisation (benchmarks/_panels_deseason.py, an experiment measured not to
help): classical decomposition indices per series, removed before the model and put back on the forecast; none
for series shorter than two seasons."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _panels_deseason import deseason, reseason, seasonal_indices


def seasonal(n: int, m: int, level: float = 100.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return level + 0.5 * t + 10 * np.sin(2 * np.pi * t / m) + rng.standard_normal(n)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 80), m=st.sampled_from([1, 2, 4, 7, 12]), level=st.sampled_from([-50.0, 0.0, 100.0]),
       seed=st.integers(0, 1000), start=st.integers(0, 30))
def test_deseason_then_reseason_returns_the_series(n, m, level, seed, start):
    y = seasonal(n, m, level, seed)
    kind, idx = seasonal_indices(y, m)
    back = reseason(deseason(y, kind, idx, start), kind, idx, start)
    np.testing.assert_allclose(back, y, rtol=1e-9, atol=1e-9)


def test_a_series_shorter_than_two_seasons_or_a_season_of_one_gets_none():
    y = seasonal(23, 12)
    assert seasonal_indices(y, 12)[0] == "none"
    assert seasonal_indices(seasonal(24, 12), 12)[0] == "multiplicative"  # two seasons: enough
    assert seasonal_indices(seasonal(50, 1), 1)[0] == "none"
    assert seasonal_indices(seasonal(50, 4), None)[0] == "none"
    kind, idx = seasonal_indices(y, 12)
    assert np.array_equal(deseason(y, kind, idx), y) and np.array_equal(reseason(y, kind, idx, 23), y)


def test_kind_is_multiplicative_for_positive_series_and_additive_otherwise():
    kind, idx = seasonal_indices(seasonal(48, 12), 12)
    assert kind == "multiplicative" and abs(idx.mean() - 1) < 1e-12
    kind, idx = seasonal_indices(seasonal(48, 12, level=0.0), 12)
    assert kind == "additive" and abs(idx.mean()) < 1e-12


def test_indices_recover_an_exact_multiplicative_pattern_and_continue_into_the_horizon():
    pattern = np.array([0.8, 1.0, 1.4, 0.8])
    level = 50.0 * 1.01 ** np.arange(30)
    y = level * np.resize(pattern, 30)
    kind, idx = seasonal_indices(y, 4)
    np.testing.assert_allclose(idx, pattern, rtol=2e-3)  # the centred MA of a 1%-growth trend is nearly exact
    flat = deseason(y, kind, idx)
    assert np.std(flat / level) < 2e-3  # the season is gone: what is left is the trend
    # the next 6 points (positions 30 % 4 = 2, 3, 0, 1, 2, 3) get the pattern continued
    ahead = reseason(np.ones(6), kind, idx, start=30)
    np.testing.assert_allclose(ahead, np.resize(np.roll(pattern, -2), 6), rtol=2e-3)


def test_a_position_with_no_finite_point_gets_none():
    y = seasonal(24, 4)
    y[2::4] = np.nan
    assert seasonal_indices(y, 4)[0] == "none"


def test_the_m4_seasonality_test_passes_a_seasonal_series_and_fails_noise_and_short_ones():
    from _panels_deseason import is_seasonal

    t = np.arange(60)
    assert is_seasonal(100 + 10 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(3).standard_normal(60), 12)
    assert not is_seasonal(np.random.default_rng(3).standard_normal(60) + 100, 12)
    assert not is_seasonal(seasonal(35, 12), 12)  # under three seasons
    assert not is_seasonal(seasonal(60, 1), 1) and not is_seasonal(np.full(60, 5.0), 12)


def test_recent_indices_follow_a_season_that_changed():
    old, new = np.array([0.5, 1.5, 1.0, 1.0]), np.array([1.0, 1.0, 0.5, 1.5])
    y = 100.0 * np.concatenate([np.resize(old, 40), np.resize(new, 20)])  # the pattern moves after 10 seasons
    kind, every = seasonal_indices(y, 4)
    kind, recent = seasonal_indices(y, 4, recent=3)
    np.testing.assert_allclose(recent, new, atol=1e-9)  # the last 3 seasons of ratios are all the new pattern
    assert np.abs(every - new).max() > 0.2  # all of them mix both
