"""The forecast as the table users get: one row per series and step (long and single layouts) or one column per
series (wide), timestamps continuing each series, interval columns beside the point forecast."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.inference.fastpath import future_times
from lstmcast.model.quantiles import interval_columns

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.data.validate import SeriesSet
    from lstmcast.run.meta import RunMeta


def forecast_table(series: SeriesSet, meta: RunMeta, y: np.ndarray, qs: np.ndarray | None,
                   levels: list[int], stamps: np.ndarray | None = None) -> pd.DataFrame:
    """``y`` (S, H, T) in original units and the quantiles ``qs`` (S, H, T, Q) or None, as ``predict`` returns
    them; ``stamps``: the horizon's times (S, H) as the model's inputs took them (UTC-naive), if at hand."""
    if meta.layout != "wide":
        return _long_frame(series, meta, y, qs, levels, stamps)
    import pandas as pd

    H = meta.horizon
    frames = []
    for i, (sid, t) in enumerate(zip(series.ids, series.times)):
        cols: dict[str, Any] = {meta.time_col: _stamps(t[-1], H, meta),
                                sid: y[i, :, 0]}
        if qs is not None:
            cols.update(interval_columns(sid, qs[i, :, 0], levels))
        frames.append(pd.DataFrame(cols))
    out = frames[0]
    for f in frames[1:]:
        for c in f.columns[1:]:  # the series' forecast (and interval) columns after the time column
            out[c] = f[c].to_numpy()
    return out


def _long_frame(series: SeriesSet, meta: RunMeta, y: np.ndarray, qs: np.ndarray | None,
                levels: list[int], stamps: np.ndarray | None) -> pd.DataFrame:
    """One frame for all series at once: a frame per series made predict ~70x slower than the model's
    forward on 1,000 series (benchmarks/many_series.py); series ending on the same day share their
    future timestamps."""
    import pandas as pd

    H = meta.horizon
    cols: dict[str, Any] = {}
    if meta.layout == "long":
        cols[meta.id_col] = np.repeat(np.array(series.ids, dtype=object), H)
    if stamps is not None:  # predict's, computed once per distinct end for the calendar and future inputs
        flat = stamps.reshape(-1)
        cols[meta.time_col] = pd.DatetimeIndex(flat).tz_localize("UTC").tz_convert(meta.tz) \
            if meta.tz and not meta.integer_time else flat
    else:
        lasts = np.array([t[-1] for t in series.times], dtype=np.int64 if meta.integer_time else "datetime64[ns]")
        uniq, inv = np.unique(lasts, return_inverse=True)
        parts = [_stamps(u, H, meta) for u in uniq]
        flat = np.concatenate(parts) if isinstance(parts[0], np.ndarray) else parts[0].append(parts[1:])
        cols[meta.time_col] = flat[(inv.reshape(-1, 1) * H + np.arange(H)).reshape(-1)]  # (S * H,) in row order
    for k, name in enumerate(meta.targets):
        cols[name] = y[:, :, k].reshape(-1)
        if qs is not None:  # (S, H, Q) -> (S * H, Q): the rows in the frame's order
            cols.update(interval_columns(name, qs[:, :, k].reshape(-1, qs.shape[-1]), levels))
    return _frame(cols, len(series.times) * H)


def _frame(cols: dict[str, Any], n: int) -> pd.DataFrame:
    """``pd.DataFrame(cols, copy=False)`` (fresh arrays: a copy costs half a one-series predict), built from the
    column arrays with the column labels' Index made once per set of names: the dict constructor spent ~45 us
    of a one-series predict inferring the labels' type and looking them up again (pandas 3.1)."""
    import pandas as pd

    build = getattr(pd.DataFrame, "_from_arrays", None)  # private, but in every pandas since 0.23
    if build is None:
        return pd.DataFrame(cols, copy=False)
    # a copy per frame: Index objects are immutable but for their .name, which a user may set on out.columns
    return build(list(cols.values()), columns=_labels(tuple(cols)).copy(), index=pd.RangeIndex(n))


@lru_cache(maxsize=64)
def _labels(names: tuple[str, ...]) -> pd.Index:
    import pandas as pd

    return pd.Index(list(names))


def _stamps(last: Any, H: int, meta: RunMeta) -> Any:
    """The horizon's timestamps as the output shows them (integer steps, or datetimes in the zone)."""
    if meta.integer_time:
        from lstmcast.data.calendar import future_times as steps

        return steps(last, meta.freq, H, integer_time=True)
    return future_times(last, H, meta.freq, meta.tz)
