"""Prediction intervals: quantile levels, the pinball loss, conformal calibration and interval scores.

A level L (percent) is the central interval between the quantiles (100 - L) / 200 and (100 + L) / 200.
The model forecasts those quantiles plus the median along a last axis Q, ascending. Calibration offsets
are in scaled units, one per level, horizon step and target. Method ``quantile``: each learned interval is
widened (offset > 0) or narrowed (< 0) by that amount on both sides; method ``residual``: the interval is
the median -+ the offset (calibration.py chooses and fits them on windows the backtest never scores).

>>> quantiles_for([80, 95])
[0.025, 0.1, 0.5, 0.9, 0.975]
>>> import numpy as np
>>> round(pinball(np.array([1.0]), np.array([[0.0, 2.0]]), np.array([0.1, 0.9]), np.ones(1)), 6)
0.1
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

MIN_PER_STEP = 30  # calibration windows per horizon step below which a level's offset is pooled over steps


def quantiles_for(levels: list[int]) -> list[float]:
    """The ascending quantiles that the central ``levels`` intervals need, median included."""
    lo = [round((100 - L) / 200, 6) for L in sorted(levels, reverse=True)]
    return lo + [0.5] + [round((100 + L) / 200, 6) for L in sorted(levels)]


def level_columns(levels: list[int]) -> list[tuple[int, int, int]]:
    """(level, index of its lower quantile, index of its upper quantile) in the ascending quantile axis."""
    n = len(levels)
    return [(L, n - 1 - k, n + 1 + k) for k, L in enumerate(sorted(levels))]


def pinball_loss(quantiles: Tensor):
    """The pinball loss over Q quantiles as a loss ``(pred (B, H, T, Q), y (B, H, T)) -> scalar``."""

    def loss(pred: Tensor, y: Tensor) -> Tensor:
        err = y.unsqueeze(-1) - pred  # (B, H, T, Q)
        q = quantiles.to(pred.dtype)
        return (q * err).maximum((q - 1) * err).mean()

    return loss


# -- calibration (numpy, scaled units) -------------------------------------------------------------
def conformal_offsets(pred: np.ndarray, y: np.ndarray, levels: list[int],
                      min_per_step: int = MIN_PER_STEP) -> tuple[np.ndarray, bool]:
    """Offsets (n_levels, H, T) that bring each level's coverage on (pred (N, H, T, Q), y (N, H, T)) to L%.

    Conformalized quantile regression: the score max(lo - y, y - hi) per window; its ceil((N+1) L%)-th
    smallest value is the offset. Per horizon step when there are ``min_per_step`` windows, else pooled
    over steps. Returns the offsets and whether they were pooled. (fit calibrates with
    calibration.scaled_conformal_offsets instead: more windows, widths scaled per step.)
    """
    N, H, T, _ = pred.shape
    pooled = N < min_per_step
    out = np.zeros((len(levels), H, T))
    for k, (L, i_lo, i_hi) in enumerate(level_columns(levels)):
        score = np.maximum(pred[..., i_lo] - y, y - pred[..., i_hi])  # (N, H, T)
        if pooled:
            out[k] = _conformal_quantile(score.reshape(N * H, T), L)[None, :]
        else:
            out[k] = np.stack([_conformal_quantile(score[:, h], L) for h in range(H)])
    return out, pooled


def _conformal_quantile(score: np.ndarray, level: int) -> np.ndarray:
    """(n, T) -> (T,): the finite-sample conformal quantile, the ceil((n + 1) L%)-th smallest score."""
    n = len(score)
    rank = min(n, math.ceil((n + 1) * level / 100))
    return np.sort(score, axis=0)[rank - 1]


def apply_offsets(pred: np.ndarray, offsets: np.ndarray | None, levels: list[int],
                  method: str = "quantile") -> np.ndarray:
    """(..., H, T, Q) quantile forecasts with each level's offsets applied, sorted so that none cross.

    ``quantile``: the learned quantiles widened (offset > 0) or narrowed; ``residual``: the median -+ offset.
    """
    if offsets is None or not len(levels):
        return pred
    out = pred.copy()
    off = np.asarray(offsets, dtype=pred.dtype)
    med = len(levels)
    for k, (_, i_lo, i_hi) in enumerate(level_columns(levels)):
        lo, hi = (pred[..., med], pred[..., med]) if method == "residual" else (pred[..., i_lo], pred[..., i_hi])
        out[..., i_lo] = lo - off[k]
        out[..., i_hi] = hi + off[k]
    # a narrowed interval must not cross the median or a neighbouring level: clip to the median, then sort
    out[..., :med] = np.minimum(out[..., :med], out[..., med:med + 1])
    out[..., med + 1:] = np.maximum(out[..., med + 1:], out[..., med:med + 1])
    return np.sort(out, axis=-1)


# -- scores (numpy, original units) ----------------------------------------------------------------
def pinball(y: np.ndarray, qpred: np.ndarray, quantiles: np.ndarray, scale: np.ndarray) -> float:
    """Mean pinball loss over all points and quantiles, each point divided by its MASE scale."""
    err = y[..., None] - qpred
    q = np.asarray(quantiles)
    loss = np.maximum(q * err, (q - 1) * err)
    return float(np.mean(loss / np.asarray(scale)[..., None]))


def interval_metrics(y: np.ndarray, qpred: np.ndarray, levels: list[int], scale: np.ndarray) -> dict[str, float]:
    """Per level coverage (share inside), width and Winkler interval score (both / MASE scale); pinball."""
    out: dict[str, float] = {}
    for L, i_lo, i_hi in level_columns(levels):
        lo, hi = qpred[..., i_lo], qpred[..., i_hi]
        alpha = 1 - L / 100
        below, above = np.maximum(lo - y, 0), np.maximum(y - hi, 0)
        out[f"coverage_{L}"] = float(np.mean((y >= lo) & (y <= hi)))
        out[f"width_{L}"] = float(np.mean((hi - lo) / scale))
        out[f"interval_score_{L}"] = float(np.mean((hi - lo + 2 / alpha * (below + above)) / scale))
    out["pinball"] = pinball(y, qpred, np.array(quantiles_for(levels)), scale)
    return out


def seasonal_naive_offsets(history: np.ndarray, horizon: int, season: int, quantiles: list[float]) -> np.ndarray:
    """(H, T, Q): quantiles of the seasonal-naive forecast's in-sample errors at each horizon step.

    Step h repeats the value ``lag = m * (h // m + 1)`` steps back, so its in-sample errors are
    y[t] - y[t - lag] over ``history`` (N, T). The median's offset is 0: its point forecast is the median.
    """
    out = np.zeros((horizon, history.shape[1], len(quantiles)))
    for h in range(horizon):
        lag = season * (h // season + 1)
        err = history[lag:] - history[:-lag] if len(history) > lag else np.zeros((1, history.shape[1]))
        err = err[np.isfinite(err).all(axis=1)]
        if len(err):
            out[h] = np.quantile(err, quantiles, axis=0).T
    out[..., len(quantiles) // 2] = 0.0
    return out


def seasonal_naive_offsets_many(histories: list[np.ndarray], horizon: int, season: int, quantiles: list[float],
                                chunk: int = 4096) -> np.ndarray:
    """(S, H, T, Q): ``seasonal_naive_offsets`` of every history, equal to it value for value. Histories of one
    length without missing values are stacked and reduced together, once per distinct lag (one np.quantile
    per series and step was the slowest part of a 100k-series backtest with intervals); others go one by one."""
    S, T, Q = len(histories), histories[0].shape[1], len(quantiles)
    out = np.zeros((S, horizon, T, Q))
    lags = np.array([season * (h // season + 1) for h in range(horizon)])
    lengths = np.array([len(x) for x in histories])
    for n in np.unique(lengths).tolist():
        members = np.flatnonzero(lengths == n)
        for lo in range(0, len(members), chunk):
            part = members[lo:lo + chunk]
            stack = np.stack([histories[i] for i in part.tolist()])  # (g, n, T)
            if not np.isfinite(stack).all():
                for i in part.tolist():
                    out[i] = seasonal_naive_offsets(histories[i], horizon, season, quantiles)
                continue
            for lag in np.unique(lags).tolist():
                if n > lag:
                    q = np.quantile(stack[:, lag:] - stack[:, :-lag], quantiles, axis=1)  # (Q, g, T)
                    out[part[:, None], np.flatnonzero(lags == lag)[None, :]] = np.moveaxis(q, 0, -1)[:, None]
    out[..., Q // 2] = 0.0
    return out


def calibrated(raw: np.ndarray, intervals: dict[str, Any] | None, mean: np.ndarray,
               std: np.ndarray) -> np.ndarray:
    """Raw model quantiles (..., Q) in scaled units -> calibrated quantiles in original units (float64)."""
    iv = intervals or {}
    levels, offsets = iv.get("levels") or [], iv.get("offsets")
    return apply_offsets(raw.astype(np.float64), None if offsets is None else np.asarray(offsets), levels,
                         iv.get("method", "quantile")) * std + mean


def interval_columns(name: str, qpred: np.ndarray, levels: list[int]) -> dict[str, np.ndarray]:
    """``name_lo_L`` and ``name_hi_L`` for each level from one series' (H, Q) quantiles."""
    cols = {}
    for L, i_lo, i_hi in level_columns(levels):
        cols[f"{name}_lo_{L}"] = qpred[:, i_lo]
        cols[f"{name}_hi_{L}"] = qpred[:, i_hi]
    return cols


def intervals_meta(levels: list[int], calibration: str, offsets: np.ndarray | None, windows: int,
                   pooled: bool, training_windows: int = 0, method: str = "quantile",
                   method_scores: dict[str, float] | None = None) -> dict[str, Any]:
    """meta.json "intervals": what a loaded run and export.json need to reproduce the intervals.

    ``method``: how the offsets apply (apply_offsets); ``method_scores``: with interval_method auto, each
    method's interval score on the calibration windows, the lower one chosen (informational)."""
    return {"levels": list(levels), "quantiles": quantiles_for(levels), "calibration": calibration,
            "method": method, "offsets": None if offsets is None else np.asarray(offsets, dtype=np.float64).tolist(),
            "calibration_windows": int(windows), "pooled": bool(pooled),
            "training_windows": int(training_windows),  # calibration.py: training windows in the set too
            "method_scores": method_scores}
