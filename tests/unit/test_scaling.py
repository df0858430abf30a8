"""Per-channel standard scaling fitted on the training split only (data/scaling.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lstmcast.data.scaling import fit_scaler, inverse, transform

values = arrays(np.float64, st.tuples(st.integers(4, 60), st.integers(1, 4)),
                elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))


@settings(max_examples=150, deadline=None)
@given(v=values, frac=st.floats(0.25, 1.0))
def test_round_trip_returns_the_original_values(v, frac):
    train_end = max(2, int(len(v) * frac))
    mean, std, _ = fit_scaler(v, train_end)
    back = inverse(transform(v, mean, std), mean, std)
    assert np.isfinite(back).all()
    # float32 in between: relative to the column's spread (scaled values are float32)
    tol = 1e-5 * (np.abs(v).max(axis=0) + std) + 1e-9
    assert (np.abs(back - v) <= tol).all()


def test_statistics_come_from_the_training_split_only():
    v = np.column_stack([np.arange(10.0), np.arange(10.0) * 2])
    mean, std, constant = fit_scaler(v, 4)  # rows 0-3
    np.testing.assert_allclose(mean, [1.5, 3.0])
    np.testing.assert_allclose(std, [np.std([0, 1, 2, 3]), np.std([0, 2, 4, 6])])
    assert constant == []
    changed = v.copy()
    changed[4:] = 1e9  # what happens after train_end must not move the scaler
    m2, s2, _ = fit_scaler(changed, 4)
    np.testing.assert_array_equal(m2, mean)
    np.testing.assert_array_equal(s2, std)
    scaled = transform(v[:4], mean, std)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, atol=1e-6)


def test_constant_columns_get_std_one_no_inf_and_are_reported():
    v = np.column_stack([np.full(20, 7.5), np.linspace(0, 1, 20), np.full(20, 1e12)])
    mean, std, constant = fit_scaler(v, 15)
    assert constant == [0, 2]
    np.testing.assert_array_equal(std[[0, 2]], [1.0, 1.0])
    scaled = transform(v, mean, std)
    assert np.isfinite(scaled).all()
    np.testing.assert_array_equal(scaled[:, 0], 0.0)
    np.testing.assert_array_equal(inverse(scaled, mean, std)[:, 0], 7.5)


def test_missing_values_are_ignored_by_the_fit_and_stay_missing():
    v = np.array([[1.0], [np.nan], [3.0], [5.0]])
    mean, std, constant = fit_scaler(v, 4)
    np.testing.assert_allclose(mean, [3.0])
    np.testing.assert_allclose(std, [np.std([1.0, 3.0, 5.0])])
    scaled = transform(v, mean, std)
    assert np.isnan(scaled[1, 0]) and np.isfinite(scaled[[0, 2, 3], 0]).all()


def _one_at_a_time(values, train_end):
    """The per-series fit prepare used before the grouped one (the reference it must equal bit for bit)."""
    head = values[:train_end].astype(np.float64)
    mean, std = np.nanmean(head, axis=0), np.nanstd(head, axis=0)
    flat = ~(std > 1e-12 * np.maximum(1.0, np.abs(mean)))
    return np.where(np.isfinite(mean), mean, 0.0), np.where(flat, 1.0, std), [int(j) for j in np.flatnonzero(flat)]


@pytest.mark.parametrize("channels", [1, 3])
def test_fit_scalers_of_many_series_equal_fit_scaler_of_each_bit_for_bit(channels):
    """prepare fits every series' scaler in grouped numpy calls (one call per series was 70% of prepare at 10k
    series): the same means, stds and constant channels as the per-series fit, with gaps, constant and all-NaN
    channels, negative split ends and chunks that split a group."""
    from lstmcast.data.scaling import fit_scalers

    rng = np.random.default_rng(channels)
    vals, ends = [], []
    for i in range(120):
        n = int(rng.choice([50, 120, 500]))
        v = (rng.lognormal(3, 1) + rng.standard_normal((n, channels)) * rng.uniform(0.01, 10)).astype(np.float32)
        if i % 7 == 0:
            v[rng.random(n) < 0.1] = np.nan
        if i % 11 == 0:
            v[:, 0] = 5.0
        if i % 13 == 0:
            v[:, -1] = np.nan
        vals.append(v)
        ends.append(int(rng.choice([n - 20, -20, n])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std, constant = fit_scalers(vals, ends, chunk=17)
        for i, (v, e) in enumerate(zip(vals, ends)):
            m1, s1, c1 = _one_at_a_time(v, e)
            assert [np.array_equal(a, b) for a, b in zip(fit_scaler(v, e)[:2], (m1, s1))] == [True, True]
            assert np.array_equal(mean[i], m1) and np.array_equal(std[i], s1)
            assert [j for k, j in constant if k == i] == c1
    assert any(k % 11 == 0 for k, _ in constant)  # the constant channels were found
