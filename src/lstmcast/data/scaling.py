"""Per-series, per-channel standard scaling fitted on the training split only (pure numpy)."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ..errors import DataError, short
from .grid import fmt

log = logging.getLogger(__name__)


def fit_scaler(values: np.ndarray, train_end: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Mean and std per channel of ``values[:train_end]`` (C,), NaN-aware.

    Constant channels (std 0, FAULTS D9) get std 1 so scaling never divides by zero; their indices
    are returned so the caller can warn.
    """
    mean, std, constant = fit_scalers([values], [train_end])
    return mean[0], std[0], [j for _, j in constant]


def fit_scalers(values: list[np.ndarray], ends: list[int], chunk: int = 4096
                ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Every series' ``fit_scaler`` at once: (S, C) means and stds, and the (series, channel) pairs that are
    constant. Series whose training splits are equally long are stacked and reduced together, a chunk at a
    time (one numpy call per series was 70% of prepare at 10k series), equal to a nanmean/nanstd per series."""
    S, C = len(values), values[0].shape[1]
    mean, std = np.zeros((S, C)), np.ones((S, C))
    lengths = np.array([len(v[:e]) for v, e in zip(values, ends)], dtype=np.int64)
    for n in np.unique(lengths).tolist():
        members = np.flatnonzero(lengths == n)
        for lo in range(0, len(members), chunk):
            part = members[lo:lo + chunk]
            head = np.stack([values[i][:n] for i in part.tolist()]).astype(np.float64)  # (g, n, C)
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels: mean 0, std 1 below
                mean[part], std[part] = np.nanmean(head, axis=1), np.nanstd(head, axis=1)
    flat = ~(std > 1e-12 * np.maximum(1.0, np.abs(mean)))
    constant = [(int(i), int(j)) for i, j in np.argwhere(flat)]
    return np.where(np.isfinite(mean), mean, 0.0), np.where(flat, 1.0, std), constant


MIN_DIFF_TO_STD = 0.01


def diff_scales(values: list[np.ndarray], ends: list[int], season: int | None, n_targets: int,
                mean: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """(S, T) each series' mean |y[t] - y[t - m]| over its training part ``values[i][:ends[i]]`` for the first
    ``n_targets`` channels, m the season where that part is longer than one season (else 1): the scale MASE
    divides by, so a pooled loss weighs the series as the metric does (a trend inflates the std, not this).
    ``fallback`` (S, T, the std) where there is no such change or it is 0 (``mean`` (S, T) sets what counts as
    0), and never below ``MIN_DIFF_TO_STD`` times it.
    One pass over the concatenated series (a numpy call per series is slow at 100k series)."""
    S = len(values)
    lens = np.array([min(int(e), len(v)) for v, e in zip(values, ends)], dtype=np.int64)
    lag = np.where((season or 1) > 1, np.where(lens > (season or 1), season or 1, 1), 1).astype(np.int64)
    flat = np.concatenate([np.asarray(v[:n, :n_targets], dtype=np.float64) for v, n in zip(values, lens.tolist())])
    seg = np.repeat(np.arange(S), lens)
    pos = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
    rows = np.flatnonzero(pos >= lag[seg])
    d = np.abs(flat[rows] - flat[rows - lag[seg[rows]]])  # (M, T), NaN where either point is missing
    out = np.array(fallback, dtype=np.float64, copy=True)
    for j in range(n_targets):
        ok = np.isfinite(d[:, j])
        total = np.bincount(seg[rows][ok], weights=d[ok, j], minlength=S)
        count = np.bincount(seg[rows][ok], minlength=S)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = total / count
        good = (count > 0) & (scale > 1e-12 * np.maximum(1.0, np.abs(mean[:, j])))
        # a near-periodic series changes little from season to season: at most 1/MIN_DIFF_TO_STD times its std
        # scaled, so its values stay a few hundred units at most and one such series cannot swamp the loss
        out[:, j] = np.where(good, np.maximum(scale, MIN_DIFF_TO_STD * out[:, j]), out[:, j])
    return out


MIN_SPREAD_POINTS = 3  # fewer training points than this measure no spread worth trusting


def borrow_spread(mean: np.ndarray, std: np.ndarray, weak: np.ndarray, relative: bool) -> np.ndarray:
    """(S, C) stds where the ``weak`` series (S,) bool (too short to measure a spread, or constant) take the table's
    typical one: the median coefficient of variation of the other series times their own level (``relative``),
    or the median std of the others (for log targets, where a std is already relative). A 1-point series is then
    scaled like its peers instead of by 1 in its own units (issue 20: a level of 1e4 scaled by 1 makes its
    targets 1e4 times larger than any other series', a log scaled by 1 gives its intervals a factor e)."""
    out = std.copy()
    strong = ~weak
    if not weak.any() or not strong.any():
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        if relative:
            cv = np.nanmedian(np.where(np.abs(mean[strong]) > 0, std[strong] / np.abs(mean[strong]), np.nan), axis=0)
            guess = np.abs(mean[weak]) * cv
        else:
            guess = np.broadcast_to(np.median(std[strong], axis=0), mean[weak].shape)
    ok = np.isfinite(guess) & (guess > 1e-12 * np.maximum(1.0, np.abs(mean[weak])))
    out[weak] = np.where(ok, guess, std[weak])
    return out


def transform(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # an overflow to inf is reported by check_overflow, not warned
        return ((values - mean) / std).astype(np.float32)


def check_overflow(values: np.ndarray, scaled: np.ndarray, channels: list[str], times: np.ndarray,
                   label: str) -> None:
    """D14: a finite value whose scaled form is inf in float32 would silently stall training or predict.

    ``values`` (N, C) raw, ``scaled`` (N, C) float32, ``times`` (N,) datetime64; refuses naming column and rows.
    """
    bad = np.isfinite(values) & ~np.isfinite(scaled)
    if not bad.any():
        return
    col = int(np.flatnonzero(bad.any(axis=0))[0])
    rows = bad[:, col]
    raise DataError(f"{int(bad.sum())} values of {label} overflow float32 after scaling, first in column "
                    f"{short(channels[col])} at {fmt(times[rows])}: they are too far from the training mean in units "
                    "of the training std; fix those values or rescale the column (lstmcast computes in float32)")


def inverse(scaled: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Back to original units; ``mean``/``std`` broadcast over the last axis."""
    return scaled.astype(np.float64) * std + mean
