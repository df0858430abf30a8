"""Per-channel standard scaling fitted on the training split only (data/scaling.py)."""

from __future__ import annotations

import numpy as np
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
