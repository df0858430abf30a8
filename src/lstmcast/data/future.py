"""Known-future covariates for the forecast horizon, read from a frame given at predict (FAULTS D17).

The frame holds the time column, the id column (long tables) and the ``data.future_features``
columns, one row per series and time for the ``horizon`` steps after the series' last observed
time. Rows up to the last observed time (a file holding the covariates' history too) and rows after the
horizon are ignored; anything else that does not fit is a DataError naming the
series, rows and columns, raised before anything is written:

- a missing column (with the closest match), a series of the data without rows in the frame,
- a horizon step without a row (naming the missing times), a step given twice,
- a row between the steps of the series' time grid (off the grid),
- an empty, non-finite, text or beyond-float32 value in a row the forecast uses.

>>> import pandas as pd
>>> from lstmcast.config import DataConfig
>>> cfg = DataConfig(time_col="t", target=["y"], future_features=["price"])
>>> fut = pd.DataFrame({"t": pd.date_range("2024-01-02", periods=2, freq="D"), "price": [1.0, 2.0]})
>>> read_future(fut, cfg, [""], [np.datetime64("2024-01-01", "ns")], 2, "D", False).tolist()
[[[1.0], [2.0]]]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, plain, short
from .calendar import future_times
from .grid import MAX_LISTED, fmt, label, stamp
from .io import read_table, table_rows
from .times import parse_times
from .validate import missing_columns

if TYPE_CHECKING:
    import pandas as pd

    from ..config import DataConfig

_F32_MAX = float(np.finfo(np.float32).max)
_HINT = "give the next {H} rows after each series' last observed time (--future FILE, predict(df, future=...))"


def read_future(future: str | os.PathLike[str] | pd.DataFrame | None, cfg: DataConfig, series_ids: Sequence[str],
                last_times: Sequence[np.datetime64] | np.ndarray, horizon: int, freq: str, integer_time: bool,
                tz: str | None = None) -> np.ndarray:
    """(S, H, Kf) float32: the ``cfg.future_features`` of each series of ``series_ids`` (in that order)
    over the ``horizon`` steps after its last time ``last_times[i]`` (UTC-naive datetime64[ns], or int64
    for integer time) on the ``freq`` grid (calendar days in zone ``tz`` for daily and coarser steps).

    ``future``: a CSV/Parquet path (read as ``--data`` is) or a DataFrame; without ``data.id_col``
    its rows serve every series. ``None`` is accepted only when there are no future_features.
    """
    names = list(cfg.future_features)
    S, H = len(series_ids), horizon
    if not names:
        return np.empty((S, H, 0), dtype=np.float32)
    if future is None:
        raise DataError(f"the model uses known-future covariates {names}: {_HINT.format(H=H)}")
    df = _read(future, cfg)
    origin = df.attrs["origin"] = str(df.attrs.get("origin", "")).replace("the DataFrame", "the future DataFrame")
    roles = [("data.time_col", cfg.time_col)] + ([("data.id_col", cfg.id_col)] if cfg.id_col else [])
    missing_columns(df, roles + [("data.future_features", n) for n in names])
    times = _times(df, cfg, freq, integer_time, origin, tz)
    last = np.asarray(last_times, dtype=np.int64 if integer_time else "datetime64[ns]").view(np.int64)
    expected = _expected(last, freq, H, integer_time, tz)  # (S, H) int64
    series = _series_of_rows(df, cfg, series_ids, origin)  # (N,) position in series_ids, -1: not asked for
    out = np.empty((S, H, len(names)), dtype=np.float32)
    if series is None:  # no id column: every series reads all rows
        for u in np.unique(last):
            pick = np.flatnonzero(last == u)
            at = _match(df, times, np.zeros(len(df), dtype=np.int64), last[pick[:1]], expected[pick[:1]],
                        [series_ids[pick[0]]], integer_time)
            out[pick] = _values(df, names, at, [series_ids[pick[0]]])
        return out
    at = _match(df, times, series, last, expected, list(series_ids), integer_time)
    return _values(df, names, at, list(series_ids))


def _read(future: str | os.PathLike[str] | pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    try:
        return read_table(future, cfg.delimiter, cfg.id_col)
    except DataError as exc:  # the reader's hints name --data; here the file came from --future
        raise DataError("future covariates: " + str(exc).replace("--data / data.path", "--future")) from None


def _times(df: pd.DataFrame, cfg: DataConfig, freq: str, integer_time: bool, origin: str,
           tz: str | None) -> np.ndarray:
    """(N,) int64: ns of UTC-naive timestamps, or integer steps; the kind must be the training data's, and
    zoned times only for a model trained on zoned times (``tz``), naive only for a naive one: zoned times
    converted to UTC and matched to a naive history land hours off (as a zoned --data is refused)."""
    import pandas as pd

    raw = df[cfg.time_col]
    is_int = pd.api.types.is_integer_dtype(raw) or (raw.dtype == object and integer_time)
    if is_int != integer_time and raw.notna().all():
        want = "integer steps" if integer_time else "dates"
        raise DataError(f"{origin}: time column {short(cfg.time_col)} must hold {want} as the training data did "
                        f"(first value {plain(raw.iloc[0])})")
    use = cfg.model_copy(update={"freq": int(freq) if integer_time else freq})
    try:
        times, zone, _ = parse_times(df, use)
    except DataError as exc:
        raise DataError(f"{origin}: {exc}") from None
    if not integer_time and bool(zone) != bool(tz):
        raise DataError(f"{origin}: time column {cfg.time_col!r} is {_zone_kind(zone)} but the training timestamps "
                        f"were {_zone_kind(tz)} (first value {plain(df[cfg.time_col].iloc[0])[:40]}): give the "
                        f"future times {'without' if tz is None else 'with'} an offset, on the clock of the data "
                        "the model was trained on")
    return times.view(np.int64)


def _zone_kind(zone: str | None) -> str:
    return f"in time zone {zone!r}" if zone else "naive (no zone)"


def _expected(last: np.ndarray, freq: str, H: int, integer_time: bool, tz: str | None) -> np.ndarray:
    """(S, H) int64: each series' horizon times; series ending together share one computation."""
    uniq, inv = np.unique(last, return_inverse=True)
    kind = np.int64 if integer_time else "datetime64[ns]"
    rows = [future_times(np.int64(u).view(kind), freq, H, integer_time, tz).view(np.int64) for u in uniq]
    return np.stack(rows)[inv.reshape(-1)]


def _series_of_rows(df: pd.DataFrame, cfg: DataConfig, series_ids: Sequence[str], origin: str) -> np.ndarray | None:
    """Each row's position in ``series_ids`` (-1: another series); None without an id column."""
    import pandas as pd

    if not cfg.id_col:
        return None
    codes, uniques = pd.factorize(df[cfg.id_col], sort=False)
    pos = {s: i for i, s in enumerate(series_ids)}
    lookup = np.array([pos.get(str(u), -1) for u in uniques] + [-1], dtype=np.int64)
    series = lookup[codes]
    present = np.zeros(len(series_ids), dtype=bool)
    present[series[series >= 0]] = True
    if not present.all():
        absent = [label(series_ids[i]) for i in np.flatnonzero(~present)]
        raise DataError(f"{origin} has no rows for {fmt(absent)} (id column {short(cfg.id_col)}): every series to "
                        "forecast needs its known-future covariates for the horizon")
    return series


def _match(df: pd.DataFrame, times: np.ndarray, series: np.ndarray, last: np.ndarray, expected: np.ndarray,
           ids: list[str], integer_time: bool) -> np.ndarray:
    """(S, H) row index of each series' horizon step; a DataError for rows off the series' time grid, steps
    given twice, or steps without a row. Rows up to the last observed time (one file holding the covariates'
    history and future serves both --data and --future) and rows after the horizon are ignored."""
    S, H = expected.shape
    mine = series >= 0
    s = np.where(mine, series, 0)
    before = mine & (times <= last[s])
    inside = mine & ~before & (times <= expected[s, -1])
    # (series, time) as one int64 key: the time's rank among all the times involved, offset by series
    pool = np.unique(np.concatenate([expected.ravel(), times[inside]]))
    flat = (np.arange(S)[:, None] * len(pool) + np.searchsorted(pool, expected)).ravel()  # sorted
    row_keys = s * len(pool) + np.searchsorted(pool, times)
    pos = np.minimum(np.searchsorted(flat, row_keys), S * H - 1)
    hit = inside & (flat[pos] == row_keys)
    _refuse_rows(df, times, inside & ~hit, s, ids, integer_time, "between the steps of its time grid (off the grid)")
    rows = np.flatnonzero(hit)
    counts = np.bincount(pos[rows], minlength=S * H)
    if counts.max(initial=0) > 1:
        k = int(np.argmax(counts > 1))
        twice = rows[pos[rows] == k]
        raise DataError(f"{label(ids[k // H])}: time {_shown(expected.ravel()[k], integer_time)} has {len(twice)} "
                        f"rows in the future frame ({fmt(table_rows(df)[twice])}): give each step once")
    at = np.full(S * H, -1, dtype=np.int64)
    at[pos[rows]] = rows
    _refuse_gaps(at.reshape(S, H), expected, ids, integer_time)
    return at.reshape(S, H)


def _shown(value: int | np.integer, integer_time: bool) -> str:
    """A time of the int64 view as a message shows it: 1871, or 2024-01-02 00:00:00."""
    return str(stamp(np.int64(value) if integer_time else np.int64(value).view("datetime64[ns]")))


def _refuse_rows(df: pd.DataFrame, times: np.ndarray, bad: np.ndarray, s: np.ndarray, ids: list[str],
                 integer_time: bool, why: str) -> None:
    if not bad.any():
        return
    first = s[np.argmax(bad)]
    rows = bad & (s == first)
    n_other = len(np.unique(s[bad])) - 1
    others = f" ({n_other} more series have such rows)" if n_other else ""
    shown = [_shown(t, integer_time) for t in times[rows][:MAX_LISTED]]
    raise DataError(f"{label(ids[first])}: the future frame has rows {why}: {fmt(table_rows(df)[rows])} (times "
                    f"{', '.join(shown)}{', ...' if rows.sum() > MAX_LISTED else ''}){others}. It must hold the "
                    "steps after the last observed time: drop those rows or fix their times")


def _refuse_gaps(at: np.ndarray, expected: np.ndarray, ids: list[str], integer_time: bool) -> None:
    holes = at < 0
    if not holes.any():
        return
    bad = np.flatnonzero(holes.any(axis=1))
    i = int(bad[0])
    times = [_shown(t, integer_time) for t in expected[i][holes[i]]]
    more = f"; {len(bad) - 1} more series miss steps too" if len(bad) > 1 else ""
    raise DataError(f"{label(ids[i])}: the future frame misses {int(holes[i].sum())} of the {at.shape[1]} horizon "
                    f"steps: {fmt(times)}{more}. Add those rows: the forecast needs every known-future covariate at "
                    "every step of the horizon")


def _values(df: pd.DataFrame, names: list[str], at: np.ndarray, ids: list[str]) -> np.ndarray:
    """(S, H, Kf) float32 of the rows ``at``; empty, text, inf or beyond-float32 cells name series, column, rows."""
    import pandas as pd

    S, H = at.shape
    out = np.empty((S, H, len(names)), dtype=np.float32)
    flat = at.ravel()
    for j, name in enumerate(names):
        raw = df[name].iloc[flat]
        num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        text = np.isnan(num) & raw.notna().to_numpy()
        if raw.dtype == object or isinstance(raw.dtype, pd.StringDtype):
            text &= raw.astype(str).str.strip().ne("").to_numpy()
        problems = (("holds text", text), ("is empty (NaN)", np.isnan(num) & ~text),
                    ("is infinite or beyond the float32 range (|x| > 3.4e38)", ~np.isfinite(num) & ~np.isnan(num)
                     | (np.abs(np.nan_to_num(num)) > _F32_MAX)))
        for why, bad in problems:
            if bad.any():
                k = int(np.argmax(bad))
                here = bad & (np.arange(len(flat)) // H == k // H)
                n = len(np.unique(np.flatnonzero(bad) // H))
                more = f" ({n - 1} more series too)" if n > 1 else ""
                shown = f" ({short(raw.iloc[k])})" if why == "holds text" else ""
                raise DataError(f"{label(ids[k // H])}: future feature {short(name)} {why}{shown} at "
                                f"{fmt(table_rows(df)[flat[here]])}{more}: every horizon step needs a finite number")
        out[:, :, j] = num.reshape(S, H)
    return out

