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


@dataclass(frozen=True)
class Split:
    """Region boundaries of one series of length n: train [0, train_end), val [train_end, val_end), test [val_end, n)."""

    n: int
    train_end: int
    val_end: int


def split_points(n: int, horizon: int, val_fraction: float, test_fraction: float, val_horizons: int = 1) -> Split:
    """Split by time; the test split holds at least one horizon, validation at least ``val_horizons``
    (on short series a tenth of the points is one noisy window: two horizons give H + 1 windows)."""
    n_test = max(horizon, int(round(n * test_fraction)))
    n_val = max(val_horizons * horizon, int(round(n * val_fraction)))
    return Split(n=n, train_end=n - n_test - n_val, val_end=n - n_test)


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
                finite: list[np.ndarray] | None = None) -> WindowIndex:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    train, val = [], []
    for i, sp in enumerate(splits):
        tr = window_starts(0, sp.train_end, window, horizon)
        va = window_starts(sp.train_end, sp.val_end, window, horizon)
        if finite is not None:
            tr = complete_starts(tr, finite[i], window + horizon)
            va = complete_starts(va, finite[i], window + horizon)
        train.append(tr + offsets[i])
        val.append(va + offsets[i])
    return WindowIndex(offsets=offsets, train=np.concatenate(train), val=np.concatenate(val))


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
