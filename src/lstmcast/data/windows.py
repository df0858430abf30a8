"""Pure window arithmetic. Shape legend: L lookback window, H horizon, C channels (T targets first).

A window starting at ``s`` reads inputs ``[s, s + L)`` and targets ``[s + L, s + L + H)`` of one
series. Splits are by time: a window belongs to the region that holds its *targets*; its inputs may
reach back into earlier regions (that is history, not leakage). All series are concatenated into ONE
tensor; windows are strided views of it (``Tensor.unfold``) and batches are gathered by index.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def gather(windows, idx, window: int, n_targets: int):
    """Batch from the strided view ``series.unfold(0, L + H, 1)`` (rows, C, L + H) at ``idx``.

    Returns x (B, L, C) and y (B, H, T).
    """
    w = windows[idx]  # (B, C, L + H): one copy of just this batch
    x = w[:, :, :window].transpose(1, 2)  # (B, L, C)
    y = w[:, :n_targets, window:].transpose(1, 2)  # (B, H, T)
    return x, y
