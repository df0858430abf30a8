"""Point metrics against values computed by hand (metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lstmcast.metrics import all_metrics, mae, mase, mase_scale, rmse, smape

Y = np.array([1.0, 2.0, 3.0, 4.0])
YHAT = np.array([2.0, 2.0, 2.0, 2.0])  # errors 1, 0, 1, 2


def test_mae_and_rmse():
    assert mae(Y, YHAT) == pytest.approx(4 / 4)
    assert rmse(Y, YHAT) == pytest.approx(math.sqrt((1 + 0 + 1 + 4) / 4))
    assert mae(Y, Y) == 0.0 and rmse(Y, Y) == 0.0


def test_smape_in_percent_with_zero_over_zero_as_zero():
    # 2|e| / (|y| + |yhat|): 2/3, 0, 2/5, 4/6
    assert smape(Y, YHAT) == pytest.approx(100 * (2 / 3 + 0 + 2 / 5 + 4 / 6) / 4)
    assert smape(np.array([0.0, 1.0]), np.array([0.0, 3.0])) == pytest.approx(100 * (0 + 4 / 4) / 2)
    assert smape(np.array([1.0]), np.array([-1.0])) == pytest.approx(200.0)  # the upper bound


def test_mase_scale_is_the_in_sample_seasonal_naive_mae_per_channel():
    history = np.array([[0.0, 1.0], [10.0, 1.0], [2.0, 1.0], [14.0, 1.0], [4.0, 1.0], [18.0, 1.0]])
    # season 2, first channel: |2-0|, |14-10|, |4-2|, |18-14| -> mean 3; second channel constant -> guarded to 1
    np.testing.assert_allclose(mase_scale(history, 2), [3.0, 1.0])
    # season 1 (naive): |10-0|, |2-10|, |14-2|, |4-14|, |18-4| -> 54 / 5
    np.testing.assert_allclose(mase_scale(history[:, :1], 1), [54 / 5])
    # a season longer than the history falls back to the naive step
    np.testing.assert_allclose(mase_scale(history[:, :1], 12), [54 / 5])


def test_mase_divides_each_series_error_by_its_own_scale():
    y = np.array([[[1.0], [2.0]], [[10.0], [20.0]]])  # (n=2 origins, H=2, T=1)
    yhat = np.array([[[2.0], [2.0]], [[13.0], [23.0]]])  # abs errors 1, 0 and 3, 3
    scale = np.array([[[0.5]], [[3.0]]])  # (n, 1, T)
    assert mase(y, yhat, scale) == pytest.approx((1 / 0.5 + 0 + 3 / 3 + 3 / 3) / 4)


def test_all_metrics_names_and_values():
    scale = np.array([2.0])
    out = all_metrics(Y, YHAT, scale)
    assert list(out) == ["MAE", "RMSE", "sMAPE", "MASE"]
    assert out["MASE"] == pytest.approx(1.0 / 2.0)
    assert out["MAE"] == pytest.approx(1.0)


def test_grouped_metrics_equal_each_group_scored_alone():
    """The one-pass per-series metrics (backtests of many series) match scoring each series by itself."""
    import numpy as np

    from lstmcast import metrics

    rng = np.random.default_rng(3)
    y = rng.normal(size=(60, 4, 2))
    yhat = y + rng.normal(size=y.shape)
    yhat[5] = y[5]  # an exact forecast: sMAPE terms of 0
    scale = rng.uniform(0.5, 2.0, size=(60, 1, 2))
    groups = rng.integers(0, 7, size=60)
    got = metrics.grouped_metrics(y, yhat, scale, groups, 7)
    for g in range(7):
        m = groups == g
        want = metrics.all_metrics(y[m], yhat[m], scale[m])
        for k, v in want.items():
            assert abs(got[k][g] - v) <= 1e-12 * max(1.0, abs(v)), (k, g)
