"""The Theta method per series, for many histories at once (numpy): the local half of a table's forecast.

A global model pools every series' windows; it sees each series through its last ``window`` points only and
learns one map for all of them. The Theta method fits each series on its whole history alone: simple
exponential smoothing (SES) for the level plus a linear drift, after dividing out a multiplicative season
where the series shows one. The two make different errors, so a weighted mean of them forecasts better than
either: a table's forecast (``model.local: theta``; ``auto`` for a table where validation says it helps,
lstmcast.inference.local) is

    (1 - w) * model + w * theta,   w = model.local_weight (0.3),

in the model's units before scaling (after ``data.transform``), wherever the model forecasts: predict, the
backtest (each origin's Theta reads the series before that origin only), the server. Every quantile of an
interval moves with the point forecast. meta.json ``local`` records w and the drift;
the measurements behind w = 0.3 and the drift of 1 are in README.md, "Panels of short series".

The method, for a history x_1..x_n (a row of a right-aligned matrix; the last HISTORY_CAP points):

1. **Season** (only with ``season`` m > 1, n >= 3m, no gap and every point > 0): the autocorrelation at lag
   m is tested at 90% (|r_m| > 1.645 sqrt((1 + 2 sum_{k<m} r_k^2) / n)). A seasonal series is divided by its
   classical-decomposition indices (the ratio to a centred moving average of one season, averaged per
   phase, normalised to mean 1), and its forecast multiplied by them again.
2. **Level**: SES l_t = l_{t-1} + a (x_t - l_{t-1}), l_1 = x_1, with a from ``ALPHAS`` minimising the
   squared one-step errors.
3. **Drift**: b, the least-squares slope of x on t. The forecast of step h is
   l_n + d b (h - 1 + 1/a - (1 - a)^n / a). d = 1/2 is the classical Theta line (the linear trend at half
   its slope); the combination uses d = 1 (``LOCAL_DRIFT``: SES with the full drift), which measured better
   with the global model on all six competition subsets but Tourism monthly.

>>> import numpy as np
>>> f = theta_forecasts([np.array([1.0, 2.0, 3.0, 4.0])], 2, None, drift=1.0)
>>> np.round(f, 6).tolist()
[[5.0, 6.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

LOCAL_DRIFT = 1.0  # the drift of the Theta forecast a table's combination uses (meta.json local.drift)
ALPHAS = np.linspace(0.05, 1.0, 20)  # the SES smoothing constants tried
HISTORY_CAP = 500  # the most recent points of each history a fit reads: a local model, and a bounded cost
SEASON_TEST_Z = 1.645  # the 90% two-sided normal quantile of the seasonality test
ROWS = 2048  # histories fitted at a time: temporaries of ROWS x width doubles (8 MB at 500 points) stay small


def theta_forecasts(histories: Sequence[np.ndarray], horizon: int, season: int | None,
                    drift: float = 0.5) -> np.ndarray:
    """(n, horizon) Theta forecasts of n 1-D histories (NaN points are skipped; an empty or all-NaN history
    forecasts NaN). ``season``: the period (None or 1: no seasonal adjustment)."""
    out = np.full((len(histories), horizon), np.nan)
    for a in range(0, len(histories), ROWS):
        out[a:a + ROWS] = _block(histories[a:a + ROWS], horizon, season or 1, drift)
    return out


def right_aligned(histories: Sequence[np.ndarray], period: int) -> np.ndarray:
    """(n, W) float64: each history's last <= HISTORY_CAP points ending in the last column, NaN before. W is a
    multiple of ``period``, so column c has phase c % period and forecast step h phase (h - 1) % period."""
    cut = [np.asarray(x, dtype=np.float64).reshape(-1)[-HISTORY_CAP:] for x in histories]
    width = max([len(x) for x in cut] + [1])
    width = -(-width // period) * period
    X = np.full((len(cut), width), np.nan)
    for i, x in enumerate(cut):
        if len(x):
            X[i, width - len(x):] = x
    return X


def _block(histories: Sequence[np.ndarray], horizon: int, m: int, drift: float) -> np.ndarray:
    X = right_aligned(histories, m)
    valid = np.isfinite(X)
    index = seasonal_indices(X, valid, m)  # (n, m), ones where no season is divided out
    phase = np.arange(X.shape[1]) % m
    X = X / index[:, phase]
    level, alpha = ses(X, valid)
    slope = ls_slope(X, valid)
    n = valid.sum(axis=1)
    h = np.arange(1, horizon + 1)[None, :]
    a = alpha[:, None]
    with np.errstate(invalid="ignore"):
        trend = drift * slope[:, None] * (h - 1 + 1 / a - (1 - a) ** n[:, None] / a)
    f = level[:, None] + np.where(n[:, None] >= 2, trend, 0.0)
    return f * index[:, (h[0] - 1) % m]


def ses(X: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's final SES level and smoothing constant (the one of ALPHAS with the least squared one-step
    error; the first on ties), started at the row's first valid point; NaN for a row with none."""
    n, W = X.shape
    level, sse = np.full((n, len(ALPHAS)), np.nan), np.zeros((n, len(ALPHAS)))
    start = np.where(valid.any(axis=1), np.argmax(valid, axis=1), W)
    gapless = valid.sum(axis=1) == W - start
    rows = np.flatnonzero(gapless)
    level[rows], sse[rows] = _ses_gapless(X[rows], start[rows])
    rows = np.flatnonzero(~gapless)
    if len(rows):
        level[rows], sse[rows] = _ses_masked(X[rows], valid[rows])
    best = np.argmin(sse, axis=1)
    return level[np.arange(n), best], ALPHAS[best]


def _ses_gapless(X: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SES levels and squared one-step errors (n, len(ALPHAS)) of rows valid from column ``start`` to the end.
    Rows sorted by start: at each column the rows already started are a prefix, updated in place (the cost
    of a fit is its points, not the widest row's)."""
    order = np.argsort(start, kind="stable")
    Xs, st = X[order], start[order]
    n, W = Xs.shape
    A = ALPHAS[None, :]
    level, sse = np.full((n, len(ALPHAS)), np.nan), np.zeros((n, len(ALPHAS)))
    err, sq = np.empty_like(level), np.empty_like(level)
    lo = np.searchsorted(st, np.arange(W), side="left")  # rows started before each column
    hi = np.searchsorted(st, np.arange(W), side="right")  # ... or at it
    for c in range(int(st.min()) if n else W, W):
        k = int(lo[c])
        if k:
            e, q = err[:k], sq[:k]
            np.subtract(Xs[:k, c:c + 1], level[:k], out=e)
            np.multiply(e, e, out=q)
            sse[:k] += q
            e *= A
            level[:k] += e
        if hi[c] > k:
            level[k:hi[c]] = Xs[k:hi[c], c:c + 1]
    out_level, out_sse = np.empty_like(level), np.empty_like(sse)
    out_level[order], out_sse[order] = level, sse
    return out_level, out_sse


def _ses_masked(X: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SES of rows with gaps: a missing point leaves the level as it is and adds no error."""
    n, W = X.shape
    A = ALPHAS[None, :]
    level, sse = np.full((n, len(ALPHAS)), np.nan), np.zeros((n, len(ALPHAS)))
    started = np.zeros(n, dtype=bool)
    for c in range(W):
        ok = valid[:, c]
        upd = (ok & started)[:, None]
        err = np.where(upd, X[:, c:c + 1] - level, 0.0)
        sse += err * err
        level = np.where(upd, level + A * err, level)
        first = ok & ~started
        level[first] = X[first, c:c + 1]
        started |= ok
    return level, sse


def ls_slope(X: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row's least-squares slope of its valid points on their column (0 with fewer than two)."""
    t = np.broadcast_to(np.arange(X.shape[1], dtype=np.float64), X.shape)
    k = valid.sum(axis=1)
    kk = np.maximum(k, 1)
    tm = np.where(valid, t, 0.0).sum(axis=1) / kk
    xm = np.where(valid, X, 0.0).sum(axis=1) / kk
    dt = np.where(valid, t - tm[:, None], 0.0)
    dx = np.where(valid, X - xm[:, None], 0.0)
    den = (dt * dt).sum(axis=1)
    return np.where((k >= 2) & (den > 0), (dt * dx).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)


def seasonal_indices(X: np.ndarray, valid: np.ndarray, m: int) -> np.ndarray:
    """(n, m) multiplicative seasonal indices by column phase: classical decomposition for the rows that pass
    the seasonality test (>= 3 seasons of positive points, no gap), ones for every other row."""
    n, W = X.shape
    out = np.ones((n, m))
    if m <= 1:
        return out
    k = valid.sum(axis=1)
    # no gap: the k points are the last k columns (from the first valid column to the end)
    contiguous = (k > 0) & (W - np.argmax(valid, axis=1) == k) & valid[:, -1]
    with np.errstate(invalid="ignore"):
        cand = (k >= 3 * m) & contiguous & ~np.any(X <= 0, axis=1)  # NaN compares False
    if not cand.any():
        return out
    rows = np.flatnonzero(cand)
    Xc, V, kc = X[rows], valid[rows], k[rows]
    xc = np.nan_to_num(Xc, nan=0.0)  # a gapless row: NaN only before its first point
    xc -= (xc.sum(axis=1) / kc)[:, None]
    xc[~V] = 0.0
    den = np.einsum("ij,ij->i", xc, xc)
    acf = np.stack([np.einsum("ij,ij->i", xc[:, :-j], xc[:, j:]) for j in range(1, m + 1)], axis=1) / \
        np.where(den > 0, den, 1.0)[:, None]
    limit = SEASON_TEST_Z * np.sqrt((1 + 2 * (acf[:, :-1] ** 2).sum(axis=1)) / kc)
    seasonal = (den > 0) & (np.abs(acf[:, -1]) > limit)
    if not seasonal.any():
        return out
    rows, Xc, V = rows[seasonal], Xc[seasonal], V[seasonal]
    trend = centred_average(Xc, V, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = Xc / trend
    good = np.isfinite(ratio)
    ratio = np.where(good, ratio, 0.0).reshape(len(rows), W // m, m)  # W is a multiple of m: column c = (c // m, c % m)
    idx = ratio.sum(axis=1) / np.maximum(good.reshape(len(rows), W // m, m).sum(axis=1), 1)
    ok = np.all(idx > 0, axis=1) & np.all(np.isfinite(idx), axis=1)
    idx = idx / idx.mean(axis=1, keepdims=True)
    out[rows[ok]] = idx[ok]
    return out


def centred_average(X: np.ndarray, valid: np.ndarray, m: int) -> np.ndarray:
    """The centred moving average of one season at each column (an even ``m``: m + 1 points, the two ends at
    half weight); NaN where it would reach past the row's valid points."""
    n, W = X.shape
    half = m // 2
    span = 2 * half + 1 if m % 2 == 0 else m
    Z = np.where(valid, X, 0.0)
    C = np.concatenate([np.zeros((n, 1)), np.cumsum(Z, axis=1)], axis=1)
    K = np.concatenate([np.zeros((n, 1)), np.cumsum(valid, axis=1)], axis=1)
    out = np.full((n, W), np.nan)
    if W < span:
        return out
    stop = W - span + 1  # windows [lo, lo + span) for lo < stop
    total = C[:, span:] - C[:, :stop]
    full = (K[:, span:] - K[:, :stop]) == span
    if m % 2 == 0:
        total -= 0.5 * (Z[:, :stop] + Z[:, span - 1:])
    out[:, span // 2:span // 2 + stop] = np.where(full, total / m, np.nan)
    return out


def theta_per_target(histories: Sequence[np.ndarray], horizon: int, n_targets: int, season: int | None,
                     drift: float) -> np.ndarray:
    """(n, horizon, n_targets) Theta forecasts of histories (n_i, >= n_targets), one target channel at a time."""
    return np.stack([theta_forecasts([x[:, t] for x in histories], horizon, season, drift)
                     for t in range(n_targets)], axis=-1)


def local_shift(point: np.ndarray, histories: Sequence[np.ndarray], local: Any, season: int | None) -> np.ndarray:
    """What a table's combination adds to ``point`` (n, H, T), the model's forecast in its
    units before scaling: w * (theta - point), ``local`` holding w and the drift (meta.json ``local``); 0
    where a history has no finite Theta forecast."""
    n, H, T = point.shape
    theta = theta_per_target(histories, H, T, season, float(local.drift))
    return np.where(np.isfinite(theta), float(local.weight) * (theta - point), 0.0)
