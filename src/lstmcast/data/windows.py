"""Pure window arithmetic. Shape legend: L lookback window, H horizon, C channels (T targets first).

A window starting at ``s`` reads inputs ``[s, s + L)`` and targets ``[s + L, s + L + H)`` of one
series. Splits are by time: a window belongs to the region that holds its *targets*; its inputs may
reach back into earlier regions (that is history, not leakage). All series are concatenated into ONE
tensor; windows are strided views of it (``Tensor.unfold``) and batches are gathered by index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError, short


@dataclass(frozen=True)
class Split:
    """Region boundaries of one series of length n: train [0, train_end), val [train_end, val_end),
    test [val_end, n)."""

    n: int
    train_end: int
    val_end: int


def split_points(n: int, horizon: int, val_fraction: float, test_fraction: float, val_horizons: int = 1,
                 how: str = "fraction", flexible: bool = False) -> Split:
    """Split by time. ``how="fraction"``: the test split holds at least one horizon, validation at least
    ``val_horizons`` (on short series a tenth of the points is one noisy window: two horizons give H + 1
    windows). ``how="last-horizon"`` (the M and Tourism competitions' protocol): the test is the last H
    points (one origin), validation the H before them.

    ``flexible`` (a table of many series): a series too short to keep ``min_train_points`` for training
    shortens its validation part to one horizon, then gives it up, then its test part, and trains on all it
    has; the table's other series validate and backtest. Without it (one series) the split is kept and prepare
    refuses a short series (D8).

    >>> split_points(48, 18, 0.1, 0.2, 2, flexible=True)  # no room for 36 validation points: trains on 30
    Split(n=48, train_end=30, val_end=30)
    >>> split_points(12, 18, 0.1, 0.2, 2, flexible=True)
    Split(n=12, train_end=12, val_end=12)
    """
    if how == "last-horizon":
        n_test, n_val = horizon, val_horizons * horizon
    else:
        n_test = max(horizon, int(round(n * test_fraction)))
        n_val = max(val_horizons * horizon, int(round(n * val_fraction)))
    need = min_train_points(horizon)
    if not flexible or n - n_test - n_val >= need:
        return Split(n=n, train_end=n - n_test - n_val, val_end=n - n_test)
    if n - n_test - horizon >= need:  # one horizon of validation (one window) where more leaves no training
        return Split(n=n, train_end=n - n_test - horizon, val_end=n - n_test)
    if n - n_test >= need:
        return Split(n=n, train_end=n - n_test, val_end=n - n_test)  # no validation part
    return Split(n=n, train_end=n, val_end=n)  # neither: every point trains


def min_train_points(horizon: int) -> int:
    """The fewest points that give one training window: one input point and a horizon of targets (the rest of
    the window left-padded and masked, see ``pad_for``)."""
    return horizon + 1


def no_trainable_series(ids: Any, lengths: Any, horizon: int) -> DataError:
    """A table in which no series has one training window: counts and the fix, in numpy (fast at 1M series)."""
    n = np.asarray(lengths, dtype=np.int64)
    need = min_train_points(horizon)
    values, counts = np.unique(n, return_counts=True)
    top = np.argsort(-counts, kind="stable")[:3]
    common = ", ".join(f"{int(counts[k]):,} have {int(values[k])} point{'s' if values[k] != 1 else ''}" for k in top)
    longest = int(np.argmax(n))
    name = f" ({short(str(ids[longest]))})" if str(ids[longest]) else ""
    lower = f"lower data.horizon to at most {int(n.max()) - 1}, or " if n.max() >= 2 else ""
    return DataError(f"no series can train: all {len(n):,} series have fewer than horizon + 1 = {need} points "
                     f"({common}; the longest{name} has {int(n[longest])}), and one training window needs one input "
                     f"point and a horizon of targets: {lower}give longer series")


def pad_for(train_end: int, window: int, horizon: int) -> int:
    """Rows of left padding a series gets in the training tensor: none when its training part holds a whole
    window + horizon (today's windows, unchanged) or not even ``min_train_points`` (no window at all), else
    ``window - 1``, so every window whose targets are real and whose inputs hold at least one real point exists
    (NeuralForecast's start padding, applied only to the series that need it)."""
    if train_end >= window + horizon or train_end < min_train_points(horizon):
        return 0
    return window - 1


def window_starts(lo: int, hi: int, window: int, horizon: int) -> np.ndarray:
    """Starts s whose targets [s+L, s+L+H) lie inside [lo, hi) and whose inputs start at s >= 0."""
    first_target = max(lo, window)
    last_target = hi - horizon
    if last_target < first_target:
        return np.empty(0, dtype=np.int64)
    return np.arange(first_target - window, last_target - window + 1, dtype=np.int64)


def complete_starts(starts: np.ndarray, finite: np.ndarray, span: int) -> np.ndarray:
    """Keep the starts whose whole span [s, s+span) has only finite rows (``missing: drop-windows``)."""
    bad = np.concatenate([[0], np.cumsum(~finite, dtype=np.int64)])
    ok = bad[starts + span] - bad[starts] == 0
    return starts[ok]


def origins(lo: int, hi: int, window: int, horizon: int, stride: int, max_origins: int) -> np.ndarray:
    """Backtest origins t (first forecast step) in [lo, hi - H], every ``stride``, the last ``max_origins``."""
    first = max(lo, window)
    last = hi - horizon
    if last < first:
        return np.empty(0, dtype=np.int64)
    ts = np.arange(last, first - 1, -stride, dtype=np.int64)[::-1]
    return ts[-max_origins:]


@dataclass
class WindowIndex:
    """Global window starts over the concatenated series, per split."""

    offsets: np.ndarray  # (S + 1,) start row of each series in the concatenated tensor
    train: np.ndarray
    val: np.ndarray


def build_index(lengths: list[int], splits: list[Split], window: int, horizon: int,
                finite: list[np.ndarray] | None = None, pads: list[int] | None = None) -> WindowIndex:
    """Window starts per split over the concatenated series; ``lengths`` are the rows each series has in the
    tensor, its ``pads[i]`` padding rows first (then ``splits[i]`` counts from the first real row). Windows of
    an unpadded series are exactly those of ``window_starts``; a padded series' targets stay on real points."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    train, val = [], []
    for i, sp in enumerate(splits):
        p = pads[i] if pads is not None else 0
        tr = window_starts(p, p + sp.train_end, window, horizon)
        va = window_starts(p + sp.train_end, p + sp.val_end, window, horizon)
        if finite is not None:
            tr = complete_starts(tr, finite[i], window + horizon)
            va = complete_starts(va, finite[i], window + horizon)
        train.append(tr + offsets[i])
        val.append(va + offsets[i])
    return WindowIndex(offsets=offsets, train=np.concatenate(train), val=np.concatenate(val))


def left_pad(values: np.ndarray, pad: int) -> np.ndarray:
    """(pad + N, C): the first row repeated ``pad`` times before ``values`` (N, C) (edge padding: the
    targets' naive and seasonal-naive reading of a padded window is the series' own first value, and the
    window mean stays at its level; the mask channel tells the model which rows are real)."""
    if pad == 0:
        return values
    return np.concatenate([np.repeat(values[:1], pad, axis=0), values])


def padded_rows(rows: np.ndarray, first: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``window`` rows before each origin row ``rows`` (P,) of a concatenated tensor, each clipped to its
    series' first row ``first`` (P,): (P, L) row indices (edge padding, as ``left_pad``) and (P, L) the mask,
    1.0 on real rows and 0.0 on padding."""
    want = rows[:, None] + np.arange(-window, 0)
    return np.maximum(want, first[:, None]), (want >= first[:, None]).astype(np.float32)


@dataclass(frozen=True)
class Roles:
    """Which channels of the series tensor play which role in a window (the batch's contract).

    Channels are ordered targets (T) first, then past-only covariates, then the known-future ones
    (``future``: future covariates, then calendar features), which the model also reads over the horizon.
    """

    window: int
    horizon: int
    n_targets: int
    future: tuple[int, ...] = ()  # channel indices known over the horizon

    def future_slice(self, channels: int) -> slice | None:
        """The known-future channels as one slice (they are always the last ones), or None."""
        return slice(channels - len(self.future), channels) if self.future else None


class Batch(NamedTuple):
    """One batch of windows, a field per input role; what every consumer of windows takes."""

    past: Any  # (B, L, C) every channel over the lookback window
    y: Any  # (B, H, T) the targets over the horizon
    future: Any = None  # (B, H, K) known-future channels over the horizon (None without any)
    static: Any = None  # (B, S) per-series inputs: numeric, then categorical codes (None without any)
    series_idx: Any = None  # (B,) which series each window belongs to (with statics)


@dataclass
class Statics:
    """Per-series inputs on the training device: ``table`` (S_series, S) and ``row_series`` (N_rows,), the
    series each row of the concatenated tensor belongs to, so a window start indexes its series' row."""

    table: Any
    row_series: Any


def split_window(w, roles: Roles, statics: Statics | None = None, starts=None) -> Batch:
    """A Batch from windows ``w`` (B, C, L + H) (rows of the strided view), starting at global rows ``starts``."""
    L, T = roles.window, roles.n_targets
    x = w[:, :, :L].transpose(1, 2)  # (B, L, C)
    y = w[:, :T, L:].transpose(1, 2)  # (B, H, T)
    fs = roles.future_slice(w.shape[1])
    future = w[:, fs, L:].transpose(1, 2) if fs is not None else None  # (B, H, K)
    if statics is None or starts is None:
        return Batch(x, y, future)
    sidx = statics.row_series[starts]
    return Batch(x, y, future, statics.table[sidx], sidx)


def gather(windows, idx, roles: Roles, statics: Statics | None = None) -> Batch:
    """Batch from the strided view ``series.unfold(0, L + H, 1)`` (rows, C, L + H) at ``idx``."""
    return split_window(windows[idx], roles, statics, idx)  # one copy of just this batch
