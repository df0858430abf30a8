"""Rolling-origin backtest on the test split against naive and seasonal-naive baselines.

At origin t (the first forecast step) every method sees only y[:t]: the model reads the window
[t - L, t), naive repeats y[t - 1], seasonal naive repeats the last observed season.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .data.windows import complete_starts, origins


def naive(y: np.ndarray, t: int, horizon: int) -> np.ndarray:
    """(H, T): the last observed value, repeated."""
    return np.repeat(y[t - 1:t], horizon, axis=0)


def seasonal_naive(y: np.ndarray, t: int, horizon: int, season: int) -> np.ndarray:
    """(H, T): step h repeats y[t + h - m * (h // m + 1)], the same phase of the last observed season."""
    h = np.arange(horizon)
    return y[t + h - season * (h // season + 1)]


@dataclass
class Backtest:
    series_idx: np.ndarray  # (n,) which series each origin belongs to
    origins: np.ndarray  # (n,) origin t within its series
    actual: np.ndarray  # (n, H, T) original units
    forecasts: dict[str, np.ndarray]  # method -> (n, H, T)
    scale: np.ndarray  # (n, 1, T) MASE scale of each origin's series
    metrics: dict[str, dict[str, float]]
    # model.levels set: method -> (n, H, T, Q) ascending quantiles, original units (model, seasonal_naive)
    quantiles: dict[str, np.ndarray] = field(default_factory=dict)


def backtest_origins(lengths: list[int], val_ends: list[int], finite: list[np.ndarray] | None,
                     window: int, horizon: int, season: int, stride: int, max_origins: int):
    """(series index, origin) pairs on each series' test split, usable by the model and both baselines."""
    pairs = []
    for i, (n, lo) in enumerate(zip(lengths, val_ends)):
        ts = origins(lo, n, max(window, season), horizon, stride, max_origins)
        if finite is not None and len(ts):
            span_start = ts - max(window, season)
            ts = complete_starts(span_start, finite[i], max(window, season) + horizon) + max(window, season)
        pairs.extend((i, int(t)) for t in ts)
    return pairs


def score(actual: np.ndarray, forecasts: dict[str, np.ndarray], scale: np.ndarray) -> dict[str, dict[str, float]]:
    return {name: metrics.all_metrics(actual, f, scale) for name, f in forecasts.items()}
