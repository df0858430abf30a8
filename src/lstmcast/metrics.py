"""Point-forecast metrics on numpy arrays (pure functions, NaN-free inputs expected).

>>> import numpy as np
>>> mae(np.array([1.0, 2.0]), np.array([2.0, 2.0]))
0.5
"""

from __future__ import annotations

import numpy as np

NAMES = ("MAE", "RMSE", "sMAPE", "MASE")
SCALE_FREE = ("sMAPE", "MASE")  # comparable across series of different scales, so averaged over series


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(y - yhat)))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric MAPE in percent (0-200); a 0/0 term counts as 0."""
    denom = np.abs(y) + np.abs(yhat)
    terms = np.divide(2.0 * np.abs(y - yhat), denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)
    return float(100.0 * np.mean(terms))


def mase_scale(history: np.ndarray, season: int) -> np.ndarray:
    """In-sample MAE of the seasonal-naive forecast on ``history`` (N, T), per channel (T,)."""
    m = season if len(history) > season else 1
    diffs = np.abs(history[m:] - history[:-m])
    scale = np.nanmean(diffs, axis=0)
    return np.where(scale > 0, scale, 1.0)


def mase(y: np.ndarray, yhat: np.ndarray, scale: np.ndarray) -> float:
    """Mean absolute error scaled per row-series: ``scale`` broadcasts against ``y`` (e.g. (n, 1, T))."""
    return float(np.mean(np.abs(y - yhat) / scale))


def all_metrics(y: np.ndarray, yhat: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    return {"MAE": mae(y, yhat), "RMSE": rmse(y, yhat), "sMAPE": smape(y, yhat), "MASE": mase(y, yhat, scale)}


def grouped_metrics(y: np.ndarray, yhat: np.ndarray, scale: np.ndarray, groups: np.ndarray,
                    n_groups: int) -> dict[str, np.ndarray]:
    """``all_metrics`` of each group of rows at once: (n_groups,) arrays, NaN for a group without rows.

    Rows are the first axis of ``y`` (N, ...); ``groups`` (N,) says each row's group. One pass with
    ``np.bincount``, so many series cost what one does (a boolean mask per series was quadratic)."""
    err = (y - yhat).reshape(len(y), -1)
    absy = np.abs(y).reshape(len(y), -1) + np.abs(yhat).reshape(len(y), -1)
    terms = np.divide(2.0 * np.abs(err), absy, out=np.zeros_like(absy, dtype=np.float64), where=absy > 0)
    scaled = (np.abs(y - yhat) / scale).reshape(len(y), -1)
    count = np.bincount(groups, minlength=n_groups).astype(np.float64) * err.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        def mean(rows: np.ndarray) -> np.ndarray:
            return np.bincount(groups, weights=rows.sum(axis=1), minlength=n_groups) / count
        return {"MAE": mean(np.abs(err)), "RMSE": np.sqrt(mean(err ** 2)), "sMAPE": 100.0 * mean(terms),
                "MASE": mean(scaled)}
