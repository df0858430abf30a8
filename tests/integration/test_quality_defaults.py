"""Defaults alone beat the seasonal-naive forecast on a short real seasonal series (benchmarks/quality.py's
protocol)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lstmcast


def _rolling_mae(fc: lstmcast.Forecaster, df: pd.DataFrame, n_hist: int, H: int, S: int) -> tuple[float, float]:
    y = df["y"].to_numpy()
    model, snaive = [], []
    for o in range(n_hist, len(df) - H + 1, H):
        actual = y[o:o + H]
        model.append(np.abs(fc.predict(df.iloc[:o])["y"].to_numpy() - actual).mean())
        snaive.append(np.abs(np.resize(y[o - S:o], H) - actual).mean())
    return float(np.mean(model)), float(np.mean(snaive))


@pytest.mark.slow
def test_a_short_monthly_series_beats_seasonal_naive_with_defaults():
    datasets = pytest.importorskip("pmdarima.datasets")  # the dev extra
    y = np.asarray(datasets.load_airpassengers(), dtype="float64")  # 144 months
    df = pd.DataFrame({"time": pd.date_range("1949-01-01", periods=len(y), freq="MS"), "y": y})
    n_hist = int(0.8 * len(df))
    cfg = {"data": {"time_col": "time", "target": "y", "window": 24, "horizon": 12, "season": 12},
           "monitor": {"tensorboard": False}}
    fc = lstmcast.Forecaster(cfg).fit(df.iloc[:n_hist])
    assert fc.config_.model.hidden_size < 64  # sized from 115 points, not the long-series default
    model, snaive = _rolling_mae(fc, df, n_hist, 12, 12)
    assert model < 0.8 * snaive, (model, snaive)
