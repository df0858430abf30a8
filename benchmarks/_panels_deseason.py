"""Per-series seasonal indices by classical decomposition (the ES-RNN-style normalisation of issue 20).

A series with at least two full seasons of finite points gets one index per position in the season, estimated
on the points given (its training part): the centred moving average of one season (2 x m for an even m) is the
trend; the ratio of each point to it (multiplicative, for strictly positive series) or the difference
(additive, otherwise), averaged per position and normalised (mean 1 or sum 0), is the index. The series is
divided by (or has subtracted) the index of each point's position; a forecast is multiplied by (or has added)
the indices continued into its horizon. A shorter series, a season of 1 or a series with a missing position
gets none: its values pass through unchanged.

>>> y = np.array([10.0, 20, 10, 20, 10, 20])
>>> kind, idx = seasonal_indices(y, 2)
>>> kind, [round(float(v), 6) for v in idx]
('multiplicative', [0.666667, 1.333333])
>>> [round(float(v), 6) for v in deseason(y, kind, idx)]
[15.0, 15.0, 15.0, 15.0, 15.0, 15.0]
>>> [round(float(v), 6) for v in reseason(np.array([15.0, 15.0]), kind, idx, start=6)]
[10.0, 20.0]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Kind = Literal["none", "multiplicative", "additive"]


def seasonal_indices(y: np.ndarray, season: int | None, recent: int | None = None) -> tuple[Kind, np.ndarray]:
    """(kind, indices (season,)) of the 1-D ``y``; index p belongs to the points ``t % season == p`` (t counted
    from y[0]). ``("none", [])`` for a season <= 1, fewer than two seasons of points, or a position with no
    finite ratio to the trend. ``recent``: average only the last ``recent`` seasons of ratios (a season that
    changes over time), else all of them."""
    m = int(season or 1)
    y = np.asarray(y, dtype=np.float64)
    if m <= 1 or len(y) < 2 * m or np.isfinite(y).sum() < 2 * m:
        return "none", np.zeros(0)
    weights = np.ones(m + 1 if m % 2 == 0 else m)
    if m % 2 == 0:
        weights[0] = weights[-1] = 0.5
    weights /= m
    half = len(weights) // 2
    trend = np.full(len(y), np.nan)
    trend[half:len(y) - half] = np.convolve(y, weights, mode="valid")  # NaN in any point of a window: NaN
    finite = y[np.isfinite(y)]
    kind: Kind = "multiplicative" if (finite > 0).all() else "additive"
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = y / trend if kind == "multiplicative" else y - trend
    pos = np.arange(len(y)) % m
    ok = np.isfinite(ratio) & ((trend > 0) if kind == "multiplicative" else True)
    if recent is not None:
        ok &= np.arange(len(y)) >= len(y) - half - recent * m
    count = np.bincount(pos[ok], minlength=m)
    if (count == 0).any():
        return "none", np.zeros(0)
    idx = np.bincount(pos[ok], weights=ratio[ok], minlength=m) / count
    if kind == "multiplicative":
        if not (idx > 0).all():
            return "none", np.zeros(0)
        return kind, idx / idx.mean()
    return kind, idx - idx.mean()


def is_seasonal(y: np.ndarray, season: int | None, z: float = 1.645) -> bool:
    """The M4 competition's seasonality test (its Theta benchmarks'): the autocorrelation at lag ``season`` is
    beyond ``z`` (90%, one-sided) times its Bartlett standard error, sqrt((1 + 2 sum_{k<m} r_k^2) / n). False for
    a season <= 1, fewer than three seasons of points, missing values or a constant series."""
    m = int(season or 1)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if m <= 1 or n < 3 * m or not np.isfinite(y).all():
        return False
    d = y - y.mean()
    denom = float(d @ d)
    if denom <= 0:
        return False
    r = np.array([float(d[k:] @ d[:n - k]) / denom for k in range(1, m + 1)])
    return bool(abs(r[-1]) > z * np.sqrt((1 + 2 * float(np.sum(r[:-1] ** 2))) / n))


def _at(idx: np.ndarray, start: int, n: int) -> np.ndarray:
    return idx[(start + np.arange(n)) % len(idx)]


def deseason(y: np.ndarray, kind: Kind, idx: np.ndarray, start: int = 0) -> np.ndarray:
    """``y`` (n,) whose first point is at position ``start`` with its seasonal component removed (a copy)."""
    y = np.asarray(y, dtype=np.float64)
    if kind == "none":
        return y.copy()
    s = _at(idx, start, len(y))
    return y / s if kind == "multiplicative" else y - s


def reseason(y: np.ndarray, kind: Kind, idx: np.ndarray, start: int) -> np.ndarray:
    """The inverse of ``deseason``: ``y`` (n,) from position ``start`` (a forecast after n points: start = n)."""
    y = np.asarray(y, dtype=np.float64)
    if kind == "none":
        return y.copy()
    s = _at(idx, start, len(y))
    return y * s if kind == "multiplicative" else y + s
