"""Conformal calibration of the prediction intervals, scaled per horizon step (numpy, scaled units).

The validation split of a short series holds about H + 1 overlapping windows from one period: per
horizon step a handful of scores, too few to calibrate on (measured: intervals 15-20 points short of
their level). So the calibration set is the validation windows plus the training windows, and the
scores of all horizon steps are pooled after dividing each step's by a scale ``s_h``: the point
forecast's mean absolute error at step h on the training windows, made non-decreasing in h (uncertainty
grows with the lead time). The pooled conformal quantile ``q`` sets the level, ``q * s_h`` the offsets.

Two interval methods share that set (``model.interval_method``). ``quantile``: the learned quantiles, each
level widened or narrowed by its offset. ``residual``: intervals centred on the median, half-width
``q * s_h`` with ``q`` the conformal quantile of the pooled scaled absolute errors |y - median| / s_h (split
conformal on the median's residuals, as seasonal naive's intervals come from its own errors). ``auto``
keeps the one with the lower interval score on the calibration windows (``choose_method``): on short
series the learned quantile head's widths are noisy, and calibrating them to cover makes them wide.

Training windows are in-sample. Where the linear skip is a fitted ridge map (training/skip_init.py), its
forecast on each training window is replaced by an out-of-sample one, refitted on earlier windows only
(``out_of_sample_shift``), so that the scores carry the map's estimation error, which dominates on short
trending series. The LSTM part stays in-sample: it is fitted with early stopping on validation, and
the validation windows are in the set too.

>>> effective_level(80, 1000), effective_level(95, 10)
(0.801, 1.0)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from lstmcast.model.quantiles import apply_offsets, interval_metrics, level_columns

if TYPE_CHECKING:
    from torch import Tensor

    from lstmcast.training.skip_init import SkipFit

OOS_BLOCKS = 20  # refits of the linear skip for the out-of-sample training forecasts


def effective_level(level: int, n: float) -> float:
    """The finite-sample conformal quantile level ceil((n + 1) L%) / n for n scores, at most 1."""
    n = max(1, int(math.floor(n)))
    return min(1.0, math.ceil((n + 1) * level / 100 - 1e-9) / n)


def step_scale(resid: np.ndarray) -> np.ndarray:
    """(N, H, T) point-forecast errors -> (H, T) mean absolute error per step, non-decreasing in h, > 0."""
    if not len(resid):
        return np.ones(resid.shape[1:])
    mae = np.maximum.accumulate(np.nan_to_num(np.mean(np.abs(resid), axis=0), nan=0.0), axis=0)
    floor = np.maximum(mae.max(axis=0, keepdims=True) * 1e-3, 1e-8)  # a perfectly fitted first step
    return np.maximum(mae, floor)


def scaled_conformal_offsets(pred: np.ndarray, y: np.ndarray, levels: list[int], scale: np.ndarray) -> np.ndarray:
    """Offsets (n_levels, H, T): q * scale per step, q the conformal quantile of the pooled scaled scores.

    pred (N, H, T, Q) the quantile forecasts and y (N, H, T) the actuals of the calibration windows;
    the score of a window and step is max(lo - y, y - hi) / scale[h] (> 0: the actual is outside).
    """
    N, H, T, _ = pred.shape
    out = np.zeros((len(levels), H, T))
    for k, (L, i_lo, i_hi) in enumerate(level_columns(levels)):
        score = (np.maximum(pred[..., i_lo] - y, y - pred[..., i_hi]) / scale).reshape(N * H, T)
        out[k] = np.quantile(score, effective_level(L, N * H), axis=0, method="higher")[None, :] * scale
    return out


def residual_offsets(median: np.ndarray, y: np.ndarray, levels: list[int], scale: np.ndarray) -> np.ndarray:
    """Half-widths (n_levels, H, T) around the median: q * scale per step, q the conformal quantile of the
    pooled scaled absolute errors |y - median| / scale[h] of the calibration windows (median, y (N, H, T))."""
    N, H, T = y.shape
    score = (np.abs(y - median) / scale).reshape(N * H, T)
    return np.stack([np.quantile(score, effective_level(L, N * H), axis=0, method="higher")[None, :] * scale
                     for L, _, _ in level_columns(levels)])


def choose_method(pred: np.ndarray, y: np.ndarray, levels: list[int],
                  offsets: dict[str, np.ndarray]) -> tuple[str, dict[str, float]]:
    """The method (a key of ``offsets``) whose calibrated intervals of (pred (N, H, T, Q), y (N, H, T)) have
    the lowest interval score, averaged over the levels; and each method's score (scaled units)."""
    ones = np.ones_like(y)
    scores = {}
    for method, off in offsets.items():
        m = interval_metrics(y, apply_offsets(pred, off, levels, method), levels, ones)
        scores[method] = float(np.mean([m[f"interval_score_{L}"] for L in levels]))
    return min(scores, key=lambda k: scores[k]), scores


def out_of_sample_shift(windows: Tensor, idx: Tensor, fit_idx: Tensor, window: int, horizon: int, n_targets: int,
                        season: int | None, skip: SkipFit, weight: Tensor, loss: str, seed: int,
                        blocks: int = OOS_BLOCKS) -> tuple[np.ndarray, np.ndarray]:
    """How the linear skip's forecast of the windows ``idx`` (ascending starts) changes out of sample.

    The map is refitted with the same prior and strength (``skip``) at up to ``blocks`` origins, each on
    the windows of ``fit_idx`` whose targets all end before the origin; a window's shift is that forecast
    minus the fitted map's (``weight``, (H, L)). Returns the shifts (n, H, T) and which windows had at
    least max(2, H) earlier windows to refit on (the others are left out of calibration).
    """
    from lstmcast.training.skip_init import fit_skip

    n = len(idx)
    shift, ok = np.zeros((n, horizon, n_targets)), np.zeros(n, dtype=bool)
    starts, fit_starts = idx.cpu().numpy(), fit_idx.cpu()
    cuts = np.unique(np.linspace(0, n, blocks + 1).astype(np.int64))
    for a, b in zip(cuts[:-1], cuts[1:]):
        earlier = fit_starts[fit_starts.numpy() <= starts[a] - horizon]
        if len(earlier) < max(2, horizon):
            continue
        w = fit_skip(windows, earlier, earlier[:0], window, horizon, n_targets, season, loss, seed, skip).weight
        x = windows[idx[a:b].cpu(), :n_targets, :window].double()  # (m, T, L): the targets alone gathered
        delta = (x - x[:, :, -1:]) @ (w.double() - weight.double()).T  # (m, T, H)
        shift[a:b], ok[a:b] = delta.transpose(1, 2).numpy(), True
    return shift, ok
