"""Low-latency predict input: a single-series DataFrame checked with numpy on just the rows used.

``predict`` only reads the last ``window`` rows. When the frame is already clean (datetime64 time
column, numeric values, strictly increasing times, the trained regular step on the training grid, no
missing values in those rows) every invariant can be confirmed in a few vectorised numpy checks, which
is ~10x cheaper than the general validation. Anything else returns ``None`` and the caller takes the
general path, which also produces the precise error messages.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from .data.validate import SeriesSet


@lru_cache(maxsize=64)
def tick_ns(freq: str) -> int | None:
    """Step of a fixed-length frequency in nanoseconds; None for calendar frequencies."""
    import pandas as pd

    offset = pd.tseries.frequencies.to_offset(freq)
    if not isinstance(offset, pd.offsets.Tick):
        return None  # calendar frequencies (months, weeks anchored on a day...) take the general path
    return int(pd.Timedelta(offset).value)


def fast_series(df: pd.DataFrame, meta: dict[str, Any]) -> SeriesSet | None:
    """A SeriesSet holding the last ``window`` rows of a clean single-series frame, or ``None``."""
    from .data.validate import SeriesSet

    if meta["layout"] != "single" or meta.get("tz"):
        return None
    step = tick_ns(meta["freq"])
    if step is None:
        return None
    cols = [meta["time_col"], *meta["targets"], *meta["features"]]
    if not all(c in df.columns for c in cols) or len(df) < meta["window"]:
        return None
    tcol = df[meta["time_col"]]
    if tcol.dtype.kind != "M" or getattr(tcol.dtype, "tz", None) is not None:
        return None
    times = tcol.to_numpy(dtype="datetime64[ns]")
    ints = times.view(np.int64)
    diffs = np.diff(ints)
    if len(diffs) and diffs.min() <= 0:
        return None  # unsorted or duplicated: the general path sorts or explains
    L = meta["window"]
    tail = ints[-L:]
    if np.any(np.diff(tail) != step):
        return None
    anchor = np.datetime64(meta["anchor"], "ns").view(np.int64)
    if (tail[-1] - anchor) % step:
        return None
    values = np.empty((L, len(cols) - 1), dtype=np.float32)
    for j, c in enumerate(cols[1:]):
        col = df[c]
        if col.dtype.kind not in "fiu":
            return None
        values[:, j] = col.to_numpy()[-L:]
    if not np.isfinite(values).all():
        return None
    return SeriesSet(ids=[""], times=[times[-L:]], values=[values], targets=list(meta["targets"]),
                     features=list(meta["features"]), freq=meta["freq"], time_col=meta["time_col"],
                     id_col=None, layout="single")


def future_times(last: np.datetime64, horizon: int, freq: str) -> Any:
    """The ``horizon`` timestamps after ``last`` on the ``freq`` grid (numpy for fixed steps)."""
    step = tick_ns(freq)
    if step is not None:
        start = np.datetime64(last, "ns").view(np.int64)
        return (start + step * np.arange(1, horizon + 1, dtype=np.int64)).view("datetime64[ns]")
    import pandas as pd

    return pd.date_range(pd.Timestamp(last), periods=horizon + 1, freq=freq)[1:]
