"""Low-latency predict input: a single-series DataFrame checked with numpy instead of pandas.

When the frame is already clean (unique column names, datetime64[ns] time column, numeric values,
every step exactly the trained regular step on the training grid, every value finite and within
float32 range) the general validation could only confirm it, which costs ~10x more than a few
vectorised numpy checks. The checks cover the *whole* frame, not just the last ``window`` rows that
``predict`` reads: the general path (inference.load_new_series) validates every row, and both paths
must accept and refuse the same inputs (FAULTS H11). Anything else returns ``None`` and the caller
takes the general path, which also produces the precise error messages.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.data.validate import SeriesSet


_F32_MAX = float(np.finfo(np.float32).max)
_FP16_MAX = 65504.0


@lru_cache(maxsize=64)
def tick_ns(freq: str) -> int | None:
    """Step of a fixed-length frequency in nanoseconds; None for calendar frequencies."""
    import pandas as pd

    offset = pd.tseries.frequencies.to_offset(freq)
    if not isinstance(offset, pd.offsets.Tick):
        return None  # calendar frequencies (months, weeks anchored on a day...) take the general path
    return int(pd.Timedelta(offset).value)


def fast_series(df: pd.DataFrame, meta: dict[str, Any], fp16_unscaled: bool = False) -> SeriesSet | None:
    """A SeriesSet holding the last ``window`` rows of a clean single-series frame, or ``None``.

    ``fp16_unscaled``: the run trains in fp16 without scaling, so the general path refuses |x| > 65504.
    """
    from lstmcast.data.validate import TIME_RANGE, SeriesSet

    if meta["layout"] != "single" or meta.get("tz"):
        return None
    step = tick_ns(meta["freq"])
    if step is None:
        return None
    cols = [meta["time_col"], *meta["targets"], *meta["features"]]
    L = meta["window"]
    if not df.columns.is_unique or not all(c in df.columns for c in cols) or len(df) < max(L, 3):
        return None
    tcol = df[meta["time_col"]]
    if tcol.dtype.kind != "M" or getattr(tcol.dtype, "tz", None) is not None:
        return None  # zones, text, numbers: the general path decides
    raw = tcol.to_numpy()  # datetime64 in the frame's unit (pandas 3 defaults to us)
    lo, hi = TIME_RANGE
    if len(raw) and not (raw.min() >= lo and raw.max() <= hi):
        return None  # outside the nanosecond range (D15; NaT compares False and is caught below)
    ints = raw.astype("datetime64[ns]").view(np.int64)
    if np.any(np.diff(ints) != step):
        return None  # a gap, NaT, unsorted or duplicated row anywhere: the general path sorts or explains
    anchor = np.datetime64(meta["anchor"], "ns").view(np.int64)
    if (ints[-1] - anchor) % step:
        return None
    values = np.empty((L, len(cols) - 1), dtype=np.float32)
    for j, c in enumerate(cols[1:]):
        col = df[c]
        if col.dtype.kind not in "fiu":
            return None
        full = col.to_numpy(dtype=np.float64)
        top = np.abs(full).max()  # NaN if any NaN: the comparison below is then False
        if not top <= (_FP16_MAX if fp16_unscaled else _F32_MAX):
            return None  # NaN, inf or beyond float32 (D14) anywhere in the frame
        values[:, j] = full[-L:]
    return SeriesSet(ids=[""], times=[ints[-L:].view("datetime64[ns]")], values=[values],
                     targets=list(meta["targets"]), features=list(meta["features"]), freq=meta["freq"],
                     time_col=meta["time_col"], id_col=None, layout="single")


def future_times(last: np.datetime64, horizon: int, freq: str, tz: str | None = None) -> Any:
    """The ``horizon`` timestamps after ``last`` (UTC-naive) on the ``freq`` grid, in zone ``tz`` if given.

    Fixed steps are numpy arithmetic in UTC; calendar steps (days and coarser) count calendar days in the
    zone, so a daily forecast stays at local midnight across DST (H13). Refuses (D15) a forecast that
    would run past the last nanosecond timestamp (2262-04-11) instead of letting int64 arithmetic wrap.
    """
    import pandas as pd

    step = tick_ns(freq)
    start = int(np.datetime64(last, "ns").view(np.int64))
    if step is not None and start + step * horizon <= pd.Timestamp.max.value:
        times = (start + step * np.arange(1, horizon + 1, dtype=np.int64)).view("datetime64[ns]")
        return pd.DatetimeIndex(times).tz_localize("UTC").tz_convert(tz) if tz else times
    if step is None:
        begin = pd.Timestamp(last)
        if tz:
            begin = begin.tz_localize("UTC").tz_convert(tz).tz_localize(None)
        try:
            times = pd.date_range(begin, periods=horizon + 1, freq=freq)[1:]
            if times.unit == "ns" and len(times) == horizon and times[-1] > begin:
                return times.tz_localize(tz, ambiguous=np.zeros(horizon, dtype=bool),
                                         nonexistent="shift_forward") if tz else times
        except (OverflowError, pd.errors.OutOfBoundsDatetime):
            pass
    from lstmcast.errors import DataError

    raise DataError(f"the {horizon} forecast timestamps after {pd.Timestamp(last)} ({freq!r} steps) run past "
                    f"{pd.Timestamp.max.floor('s')}, the last timestamp lstmcast can represent (pandas "
                    "nanoseconds): forecast a series that ends earlier or use a shorter horizon")
