"""The time column: dates (D7, D15) or integer time steps, parsed once for the whole table.

A time column is **integer time** (years 1871..1970, step numbers 0..N) when its dtype is an integer
one: a Parquet or DataFrame integer column, or a CSV column of plain integers (pandas reads those as
integers). Times are then int64 and ``data.freq`` may give the integer step. Text is parsed as dates
(``"1871"`` text stays the year 1871 as before), except that with an integer ``data.freq`` text of
plain integers is integer time too.

Integers that are really dates are not silently taken as steps: values >= 1e8 (seconds, milliseconds
or nanoseconds since 1970) and values that read as YYYYMMDD or YYYYMM dates are refused with the fix
(convert them, or set ``data.time_format`` such as ``'%Y%m%d'``), unless ``data.freq`` is an integer,
which says they are steps.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, DataError, cut, plain, short
from .grid import fmt
from .io import table_rows

if TYPE_CHECKING:
    import pandas as pd

    from ..config import DataConfig

log = logging.getLogger(__name__)
TIME_RANGE = (np.datetime64("1677-09-22", "D"), np.datetime64("2262-04-11", "D"))
_TZ_RE = re.compile(r"\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(Z|[+-]\d\d:?\d\d)$")  # an offset follows a time of day
_NUMERIC_DATE = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.]\d{4}(?:$|[ T])")  # 31-01-2000, 01/31/2000 13:00
_EPOCH_MIN = 10**8  # 1973-03-03 in seconds since 1970; step numbers this large are rare, and data.freq says so


def rows_at(df: pd.DataFrame, mask: np.ndarray) -> str:
    """The table rows where ``mask`` is true, as a message names them (at most five, then a count)."""
    return fmt(table_rows(df)[np.asarray(mask)])


def check_freq(freq: int | str | None) -> None:
    import pandas as pd

    if freq is None or isinstance(freq, int):
        return
    try:
        pd.tseries.frequencies.to_offset(freq)
    except ValueError:
        raise ConfigError(f"data.freq {short(freq)} is not a pandas frequency: use e.g. 'h' (hourly), '15min', 'D', "
                          "'W-SUN', 'MS' (month start), or an integer step for a time column of integers") from None


def parse_times(df: pd.DataFrame, cfg: DataConfig) -> tuple[np.ndarray, str | None, bool]:
    """(times, zone, integer_time): UTC-naive datetime64[ns] and the zone they came in (None if naive),
    or int64 steps with ``integer_time`` True (module docstring)."""
    import pandas as pd

    raw = df[cfg.time_col]
    if raw.isna().any():
        raise DataError(f"time column {short(cfg.time_col)} has empty cells at {rows_at(df, raw.isna().to_numpy())}: "
                        "every row needs a timestamp")
    if pd.api.types.is_integer_dtype(raw) and not cfg.time_format:
        return _integer_times(df, cfg, raw), None, True
    if not pd.api.types.is_datetime64_any_dtype(raw) and not pd.api.types.is_numeric_dtype(raw) and \
            isinstance(cfg.freq, int) and _plain_integers(raw):
        return _integer_times(df, cfg, pd.to_numeric(raw.astype(str).str.strip())), None, True
    if isinstance(cfg.freq, int):
        raise DataError(f"data.freq is the integer step {cfg.freq} but time column {short(cfg.time_col)} holds dates "
                        f"(first {plain(raw.iloc[0])}): give a pandas frequency (e.g. 'h', 'D', 'MS') or leave "
                        "data.freq unset to infer it")
    if pd.api.types.is_datetime64_any_dtype(raw):  # already parsed (DataFrame or Parquet): keep its zone
        parsed = raw.dt.tz_convert("UTC") if cfg.utc and raw.dt.tz is not None else raw
    elif pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_integer_dtype(raw):
        whole = " (whole numbers stored as floats: store them as integers for integer time)" if \
            bool(np.all(np.mod(raw.to_numpy(dtype=np.float64), 1) == 0)) else ""
        raise DataError(f"time column {short(cfg.time_col)} holds decimal numbers, not timestamps or integer steps "
                        f"(first {plain(raw.iloc[0])}){whole}: give dates/times, e.g. 2024-01-31 or "
                        "2024-01-31T13:00, or integer steps such as years")
    else:  # text, or integers with data.time_format (e.g. 20240131 with '%Y%m%d')
        parsed = _parse_text_times(df, cfg)
    tz = None
    if getattr(parsed.dt, "tz", None) is not None:
        tz = str(parsed.dt.tz)
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    _check_time_range(df, cfg.time_col, parsed.to_numpy())
    return parsed.to_numpy(dtype="datetime64[ns]"), tz, False


def _plain_integers(raw: pd.Series) -> bool:
    return bool(raw.astype(str).str.fullmatch(r"\s*[+-]?\d{1,18}\s*").all())


def _integer_times(df: pd.DataFrame, cfg: DataConfig, raw: pd.Series) -> np.ndarray:
    """int64 steps; refuses integers that look like dates unless data.freq is an integer (module doc)."""
    col = cfg.time_col
    if raw.dtype.kind == "u" and len(raw) and int(raw.max()) > np.iinfo(np.int64).max:
        big = raw.to_numpy() > np.iinfo(np.int64).max
        raise DataError(f"time column {short(col)} has integers beyond 2**63-1 at {rows_at(df, big)}: renumber it")
    t = raw.to_numpy(dtype=np.int64)
    if isinstance(cfg.freq, int):
        return t
    if isinstance(cfg.freq, str):
        raise DataError(f"time column {short(col)} holds integers (first {int(t[0])}) but data.freq is "
                        f"{short(cfg.freq)}, a "
                        "calendar frequency: for step numbers or years set data.freq to the integer step (e.g. 1); "
                        "for timestamps stored as numbers convert them to dates (pd.to_datetime(df[col], unit='s'))")
    lo, hi = int(t.min()), int(t.max())
    if lo >= _EPOCH_MIN:
        raise DataError(f"time column {short(col)} holds integers from {lo} to {hi}, which look like timestamps "
                        "counted "
                        "since 1970 (seconds, milliseconds or nanoseconds), not step numbers: convert them to dates "
                        "(e.g. pd.to_datetime(df[col], unit='s')), or, if they are step numbers, set data.freq to "
                        "the integer step (e.g. data.freq: 1)")
    fmt_ = _date_digits(t)
    if fmt_ is not None:
        raise DataError(f"time column {short(col)} holds integers ({lo} to {hi}) that read as dates written "
                        f"{fmt_.replace('%', '').upper().replace('Y', 'YYYY').replace('M', 'MM').replace('D', 'DD')}"
                        f": set data.time_format: '{fmt_}' to read them as dates, or, if they are step numbers, set "
                        "data.freq to the integer step (e.g. data.freq: 1)")
    return t


def _date_digits(t: np.ndarray) -> str | None:
    """'%Y%m%d' or '%Y%m' when every value is such a date and the steps are uneven (a month boundary)."""
    if len(np.unique(np.diff(np.sort(t)))) <= 1:
        return None  # evenly spaced integers are steps, whatever their digits
    if t.min() >= 10**7 and t.max() < 10**8:
        month, day = t // 100 % 100, t % 100
        if ((month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)).all():
            return "%Y%m%d"
    if t.min() >= 10**5 and t.max() < 10**6 and ((t % 100 >= 1) & (t % 100 <= 12)).all():
        return "%Y%m"
    return None


def _check_time_range(df: pd.DataFrame, col: str, times: np.ndarray) -> None:
    """D15: lstmcast's grid is in nanoseconds; a timestamp outside that range would wrap (1500 -> 2084)."""
    import pandas as pd

    lo, hi = TIME_RANGE  # whole days inside pandas' limits (numpy wraps converting the exact ones)
    bad = (times < lo) | (times > hi)
    if bad.any():
        raise DataError(f"time column {short(col)} has {int(bad.sum())} timestamps outside the supported range "
                        f"{lo} to {hi} (pandas nanosecond timestamps), first "
                        f"{pd.Timestamp(times[bad][0]).isoformat()} at {rows_at(df, bad)}: shift or re-date the "
                        "series into that range")


def _parse_text_times(df: pd.DataFrame, cfg: DataConfig) -> pd.Series:
    """Text to dates: with ``data.time_format`` exactly that format (before any zone check: a format
    says how to read the text); otherwise the zone check, then day-first detection, then pandas."""
    text = df[cfg.time_col].astype(str).str.strip()
    fmt_ = cfg.time_format
    if fmt_ is None:
        if not cfg.utc:
            _check_zones(df, cfg.time_col, text)
        fmt_ = _numeric_date_format(df, cfg.time_col, text)
    return _to_datetime(df, cfg, text, fmt_)


def _check_zones(df: pd.DataFrame, col: str, text: pd.Series) -> None:
    """D7: offsets that differ between rows. An offset only follows a time of day (``13:00+01:00``), so the
    year of ``01-01-2000`` or ``Jan-1-1995`` is never read as one."""
    offsets = text.str.extract(_TZ_RE, expand=False).fillna("none")
    offsets = offsets.str.replace("Z", "+00:00", regex=False).str.replace(r"(\d\d)(\d\d)$", r"\1:\2", regex=True)
    if offsets.nunique() > 1:
        first = offsets.iloc[0]
        bad = (offsets != first).to_numpy()
        raise DataError(f"time column {short(col)} mixes time zones ({first} at {table_rows(df)[0]}, "
                        f"{offsets[bad].iloc[0]} at {rows_at(df, bad)}): set data.utc: true (CLI: --set "
                        "data.utc=true) to convert all timestamps to UTC")


def _numeric_date_format(df: pd.DataFrame, col: str, text: pd.Series) -> str | None:
    """The format of dates written day and month first (``31-01-2000``, ``01/02/2000 13:00``, ``1.2.2000``),
    day-first or month-first as the values decide; None for other text (pandas infers it).

    Day-first when some first number is above 12, month-first when some second one is; when both readings
    are valid dates, the one that gives a regular grid; when both or neither do, an error that names the
    ``data.time_format`` of each reading (pandas alone would read month-first, silently)."""
    import pandas as pd

    parts = text.str.extract(_NUMERIC_DATE)
    if len(text) == 0 or parts.isna().any(axis=None):
        return None
    first, second = parts[0].astype(int).to_numpy(), parts[1].astype(int).to_numpy()
    readings = {}
    if (second <= 12).all() and (first <= 31).all():
        readings["day-first"] = _guess(text.iloc[0], dayfirst=True)
    if (first <= 12).all() and (second <= 31).all():
        readings["month-first"] = _guess(text.iloc[0], dayfirst=False)
    readings = {k: v for k, v in readings.items() if v is not None}
    if len(readings) <= 1:
        return next(iter(readings.values()), None)
    regular = [k for k, f in readings.items() if _regular(pd.to_datetime(text, format=f, errors="coerce"))]
    if len(regular) == 1:
        log.info("time column %r: read dates %s (%s); set data.time_format to override", col, regular[0],
                 readings[regular[0]])
        return readings[regular[0]]
    d, m = readings["day-first"], readings["month-first"]
    raise DataError(f"time column {short(col)} holds dates such as {plain(text.iloc[0])} that read both day-first and "
                    f"month-first{' on a regular grid' if regular else ''}: set data.time_format: '{d}' "
                    f"(CLI: --set data.time_format={d}) for day-first, or '{m}' for month-first")


def _guess(first: str, dayfirst: bool) -> str | None:
    from pandas.tseries.api import guess_datetime_format

    return guess_datetime_format(first, dayfirst=dayfirst)


def _regular(parsed: pd.Series) -> bool:
    """Every row parsed and the distinct times (a long table repeats them) evenly spaced: by a fixed step,
    or by whole months on one day of the month and time of day (monthly, quarterly, yearly)."""
    import pandas as pd

    if parsed.isna().any():
        return False
    t = pd.DatetimeIndex(parsed.drop_duplicates().sort_values())
    if len(t) < 3:
        return False
    if len(np.unique(np.diff(t.asi8))) == 1:
        return True
    months = t.year.to_numpy() * 12 + t.month.to_numpy()
    same_day = len(np.unique(t.day)) == 1 and len((t - t.normalize()).unique()) == 1
    return same_day and len(np.unique(np.diff(months))) == 1


def _to_datetime(df: pd.DataFrame, cfg: DataConfig, text: pd.Series, fmt_: str | None) -> pd.Series:
    import pandas as pd

    hint = "set data.time_format (e.g. '%Y-%m-%d %H:%M', '%d-%m-%Y') to the format of the column"
    try:
        parsed = pd.to_datetime(text, format=fmt_, utc=cfg.utc, errors="coerce")
    except (ValueError, TypeError) as exc:
        zones = " or set data.utc: true to convert them to UTC" if "zone" in str(exc) else ""
        raise DataError(f"time column {short(cfg.time_col)} cannot be parsed ({cut(str(exc), 200)}): "
                        f"{hint}{zones}") from None
    bad = parsed.isna().to_numpy()
    if bad.any():
        first = text[bad].iloc[0]
        using = f" with data.time_format {fmt_!r}" if fmt_ else ""
        raise DataError(f"time column {short(cfg.time_col)}: {int(bad.sum())} unparseable timestamps{using}, first "
                        f"{short(first)} at {rows_at(df, bad)}: fix those rows or {hint}")
    return parsed
