"""Low-latency predict input: a single-series DataFrame checked with numpy instead of pandas.

When the frame is already clean (unique column names, datetime64[ns] time column, numeric values,
every step exactly the trained regular step on the training grid (a fixed length for sub-daily, daily and
weekly steps of naive times; whole months at midnight on the first or last day for months, quarters and
years), every value finite and within float32 range) the general validation could only confirm it, which
costs ~10x more than a few vectorised numpy checks. The checks cover the *whole* frame, not just the last
``window`` rows that ``predict`` reads: the general path (inference.load_new_series) validates every row, and
both paths must accept and refuse the same inputs (FAULTS H11). Anything else returns ``None`` and the caller
takes the general path, which also produces the precise error messages.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.data.calendar import fixed_step_ns, month_stamps, month_step

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.data.validate import SeriesSet
    from lstmcast.run.meta import RunMeta


_F32_MAX = float(np.finfo(np.float32).max)
_FP16_MAX = 65504.0


def fast_series(df: pd.DataFrame, meta: RunMeta, fp16_unscaled: bool = False) -> SeriesSet | None:
    """A SeriesSet holding the last ``window`` rows of a clean single-series frame, or ``None``.

    ``fp16_unscaled``: the run trains in fp16 without scaling, so the general path refuses |x| > 65504.
    """
    if meta.layout != "single" or meta.tz or meta.integer_time:
        return None
    cols = [meta.time_col, *meta.targets, *meta.features]
    if not df.columns.is_unique or not all(c in df.columns for c in cols):
        return None
    tcol = df[meta.time_col]
    if tcol.dtype.kind != "M" or getattr(tcol.dtype, "tz", None) is not None:
        return None  # zones, text, numbers: the general path decides
    if any(df[c].dtype.kind not in "fiu" for c in cols[1:]):
        return None
    # datetime64 in the frame's unit (pandas 3 defaults to us); the columns read as float64 once the grid is checked
    return fast_arrays(tcol.to_numpy(), [df[c] for c in cols[1:]], meta, fp16_unscaled)


def fast_arrays(raw: np.ndarray, columns: Sequence[Any], meta: RunMeta,
                fp16_unscaled: bool = False) -> SeriesSet | None:
    """``fast_series``'s checks on the columns themselves: ``raw`` the time column (naive datetime64, any unit),
    ``columns`` the targets then the features (float64 arrays, or numeric pandas Series) in ``meta``'s order. A
    caller holding the columns without a DataFrame (the service's JSON reader) skips building one. ``None`` where
    the general path must decide."""
    from lstmcast.data.validate import TIME_RANGE, SeriesSet

    if meta.layout != "single" or meta.tz or meta.integer_time:
        return None
    step, months = fixed_step_ns(meta.freq), month_step(meta.freq)
    if step is None and months is None:
        return None  # business days and other calendar steps: the general path
    L = meta.window
    if len(raw) < max(L, 3) or raw.dtype.kind != "M" or len(columns) != len(meta.targets) + len(meta.features):
        return None
    lo, hi = TIME_RANGE
    if len(raw) and not (raw.min() >= lo and raw.max() <= hi):
        return None  # outside the nanosecond range (D15; NaT compares False and is caught below)
    ints = raw.astype("datetime64[ns]").view(np.int64)
    if not (_on_fixed_grid(ints, step, meta.anchor) if step is not None else _on_month_grid(ints, *months,
                                                                                             meta.anchor)):
        return None  # a gap, NaT, unsorted or duplicated row anywhere: the general path sorts or explains
    values = np.empty((L, len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        full = col if isinstance(col, np.ndarray) else col.to_numpy(dtype=np.float64)
        if full.dtype != np.float64 or len(full) != len(raw):
            return None
        top = np.abs(full).max()  # NaN if any NaN: the comparison below is then False
        if not top <= (_FP16_MAX if fp16_unscaled else _F32_MAX):
            return None  # NaN, inf or beyond float32 (D14) anywhere in the frame
        values[:, j] = full[-L:]
    return SeriesSet(ids=[""], times=[ints[-L:].view("datetime64[ns]")], values=[values],
                     targets=list(meta.targets), features=list(meta.features), freq=meta.freq,
                     time_col=meta.time_col, id_col=None, layout="single")


def _on_fixed_grid(ints: np.ndarray, step: int, anchor: str) -> bool:
    """Every stamp exactly ``step`` ns after the one before, in phase with the training grid."""
    if np.any(np.diff(ints) != step):
        return False
    return not (ints[-1] - np.datetime64(anchor, "ns").view(np.int64)) % step


def _on_month_grid(ints: np.ndarray, months: int, end: bool, anchor: str) -> bool:
    """Every stamp at midnight on its month's first (last) day, ``months`` months after the one before, in
    phase with the training grid: the stamps equal the grid counted from the first one (one conversion of
    months to stamps; converting every stamp to its month as well took twice as long on 2,000 rows)."""
    if ints[0] == np.iinfo(np.int64).min:
        return False  # NaT: no month
    first = ints[:1].view("datetime64[ns]").astype("datetime64[M]")[0]
    last = first + months * (len(ints) - 1)
    if last >= np.datetime64("2262-04", "M"):
        return False  # the grid would leave the nanosecond range: these stamps cannot all be on it
    if not np.array_equal(month_stamps(first + months * np.arange(len(ints)), end).view(np.int64), ints):
        return False
    return not (last - np.datetime64(anchor, "ns").astype("datetime64[M]")).astype(np.int64) % months


# a forward of at most this many windows runs on one torch thread: a one-window LSTM forward (L=96, hidden 64x2)
# took 0.41 ms on one thread and 1.9-12 ms on two, and a whole one-series predict 6-11 ms against 84-134 ms, on
# the 2-core machine shared with other jobs (at 4 windows one thread was as fast as two); larger batches keep the
# process's threads
FEW_WINDOWS = 4


@contextmanager
def one_thread_for_few(windows: int) -> Iterator[None]:
    """Run the block on one torch thread when it forwards at most ``FEW_WINDOWS`` windows, then restore the
    count. torch's thread count (OpenMP's) belongs to the calling thread once it has run torch code, so the
    change and its undoing stay on the caller's thread; other threads keep theirs."""
    import torch

    before = torch.get_num_threads() if windows <= FEW_WINDOWS else 1
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before > 1:
            torch.set_num_threads(before)


def future_times(last: np.datetime64, horizon: int, freq: str, tz: str | None = None) -> Any:
    """The ``horizon`` timestamps after ``last`` (UTC-naive) on the ``freq`` grid, in zone ``tz`` if given.

    ``lstmcast.data.calendar.future_times`` computes them (calendar days in the zone for daily and coarser
    steps, H13; a DataError past 2262-04-11, D15); here they are shown in the zone.
    """
    import pandas as pd

    from lstmcast.data.calendar import future_times as _future_times

    times = _future_times(last, freq, horizon, integer_time=False, tz=tz)
    return pd.DatetimeIndex(times).tz_localize("UTC").tz_convert(tz) if tz else times
