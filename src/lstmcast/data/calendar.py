"""Calendar features and forecast timestamps: pure functions of the timestamps and the frequency.

Each calendar feature is a position in a cycle (hour in the day, day in the week, ...) mapped to
``sin`` and ``cos`` of ``2 pi position``, so values lie in [-1, 1] (no scaling needed) and the end of
a cycle meets its start (23:00 is next to 00:00). They are known for any future timestamp, so they
can feed the forecast horizon without a file.

>>> import numpy as np
>>> t = np.array(["2024-01-01T00", "2024-01-01T06"], dtype="datetime64[ns]")
>>> calendar_features(t, ["hour_of_day"]).round(3).tolist()
[[0.0, 1.0], [1.0, 0.0]]
>>> calendar_for("h", "auto", integer_time=False)
['hour_of_day', 'day_of_week']
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from ..config import CalendarName
from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

# minute_of_hour, hour_of_day, day_of_week, day_of_month, day_of_year, week_of_year, month_of_year,
# quarter_of_year: the vocabulary of data.calendar (config.CalendarName)
CALENDAR_NAMES: tuple[str, ...] = get_args(CalendarName)
CalendarSpec = Literal["auto", "none"] | Sequence[CalendarName] | Sequence[str]

_MINUTE, _HOUR, _DAY = 60 * 10**9, 3600 * 10**9, 86_400 * 10**9
# what 'auto' adds, by the step's length: only sub-daily data gets calendar features. Their season is the day
# (24 hourly steps), so the week (day_of_week) is a cycle the linear skip's seasonal prior cannot see; at a day
# or longer the one natural cycle IS the season the skip already models, and the extra channels only add
# parameters (measured with benchmarks/quality.py, calendar on vs off, README "Covariates": half-hourly taylor
# and hourly vic_elec 0.72-0.74x the MASE; daily vic_elec unchanged; airpassengers 1.12x worse, woolyrnq
# 1.01x, cpi 0.96x, co2 1.00x over 3 seeds). A list in data.calendar still picks any of them at any step.
_AUTO = ((_HOUR, ("hour_of_day", "day_of_week")),  # sub-hourly: minute_of_hour would add noise, not signal
         (_DAY, ("hour_of_day", "day_of_week")))
_SAMPLE = 400  # grid steps sampled to see whether a feature varies at a frequency
# the longest cycle of each feature: a sample grid shorter than it cannot show the feature to be constant
_CYCLE_NS = {"minute_of_hour": _HOUR, "hour_of_day": _DAY, "day_of_week": 7 * _DAY, "day_of_month": 31 * _DAY,
             "day_of_year": 366 * _DAY, "week_of_year": 371 * _DAY, "month_of_year": 366 * _DAY,
             "quarter_of_year": 366 * _DAY}


@lru_cache(maxsize=64)
def tick_ns(freq: str) -> int | None:
    """Step of a fixed-length frequency in nanoseconds; None for calendar frequencies (days and coarser) and
    for the integer step of integer time ("1")."""
    import pandas as pd

    if freq.strip().isdigit():
        return None
    offset = pd.tseries.frequencies.to_offset(freq)
    if not isinstance(offset, pd.offsets.Tick):
        return None
    return int(pd.Timedelta(offset).value)


@lru_cache(maxsize=64)
def fixed_step_ns(freq: str) -> int | None:
    """Step in nanoseconds of a frequency that has one length on UTC-naive times: the ticks, and whole days
    and weeks (without a zone no day has 23 or 25 hours); None for months and coarser, business days and
    integer time. In a zone, days are calendar days: use ``tick_ns``."""
    import pandas as pd

    step = tick_ns(freq)
    if step is not None or freq.strip().isdigit():
        return step
    offset = pd.tseries.frequencies.to_offset(freq)
    if type(offset) is pd.offsets.Day and offset.n > 0:
        return offset.n * _DAY
    if type(offset) is pd.offsets.Week and offset.n > 0:
        return 7 * offset.n * _DAY
    return None


@lru_cache(maxsize=64)
def month_step(freq: str) -> tuple[int, bool] | None:
    """(months per step, whether stamps fall on the month's last day) for month, quarter and year starts and
    ends ('MS', 'ME', 'QS-JAN', 'YE', '3MS'); None for any other frequency."""
    import pandas as pd

    if freq.strip().isdigit():
        return None
    offset = pd.tseries.frequencies.to_offset(freq)
    per = {pd.offsets.MonthBegin: (1, False), pd.offsets.MonthEnd: (1, True), pd.offsets.QuarterBegin: (3, False),
           pd.offsets.QuarterEnd: (3, True), pd.offsets.YearBegin: (12, False), pd.offsets.YearEnd: (12, True)}
    found = per.get(type(offset))
    if found is None or offset.n <= 0:
        return None
    return found[0] * offset.n, found[1]


def month_stamps(months: np.ndarray, end: bool) -> np.ndarray:
    """Midnight of the first (or, with ``end``, last) day of each datetime64[M] month, as datetime64[ns]."""
    if end:
        return ((months + 1).astype("datetime64[D]") - np.timedelta64(1, "D")).astype("datetime64[ns]")
    return months.astype("datetime64[ns]")


def _check_names(names: Sequence[str]) -> None:
    from ..errors import did_you_mean

    for name in names:
        if name not in CALENDAR_NAMES:
            raise ConfigError(f"data.calendar: unknown calendar feature {name!r}{did_you_mean(name, CALENDAR_NAMES)}:"
                              f" use 'auto', 'none' or a list of {', '.join(CALENDAR_NAMES)}")


@lru_cache(maxsize=64)
def _sample(freq: str) -> tuple[pd.DatetimeIndex, int]:
    """A grid of ``_SAMPLE`` steps of ``freq`` from 2001-01-01 and its mean step in ns."""
    import pandas as pd

    try:
        grid = pd.date_range("2001-01-01", periods=_SAMPLE, freq=freq).as_unit("ns")
    except (OverflowError, pd.errors.OutOfBoundsDatetime):  # yearly and coarser: as many as pandas holds
        grid = pd.date_range("1700-01-01", "2260-01-01", freq=freq)[:_SAMPLE].as_unit("ns")
    if len(grid) < 2:
        return grid, 2**62  # a step of centuries: no calendar feature varies within a season
    return grid, int(np.diff(grid.asi8).mean())


def _positions(ns: np.ndarray, name: str) -> np.ndarray:
    """Where each wall-clock timestamp (int64 nanoseconds since 1970) lies in the feature's cycle, in [0, 1)
    (float64). numpy date arithmetic: pandas' field accessors cost ~10x more, a third of a one-series
    predict (pandas' ISO weeks cost 4 ms on 150 stamps)."""
    day = ns // _DAY  # days since 1970-01-01 (floor: dates before 1970 too)
    of_day = ns - day * _DAY
    if name == "minute_of_hour":
        return (of_day % _HOUR // _MINUTE + of_day % _MINUTE // 10**9 / 60) / 60
    if name == "hour_of_day":  # the time of day: 15-minute data tells 12:15 from 12:45
        return (of_day // _HOUR + of_day % _HOUR // _MINUTE / 60) / 24
    if name == "day_of_week":  # Monday 0: 1970-01-01 was a Thursday
        return (day + 3) % 7 / 7
    dates = day.astype("datetime64[D]")
    month = dates.astype("datetime64[M]")
    if name == "day_of_month":
        first = month.astype("datetime64[D]")
        days_in_month = ((month + 1).astype("datetime64[D]") - first).astype(np.int64)
        return (dates - first).astype(np.int64) / days_in_month
    if name == "day_of_year":
        year = dates.astype("datetime64[Y]")
        days_in_year = ((year + 1).astype("datetime64[D]") - year.astype("datetime64[D]")).astype(np.int64)
        return (dates - year.astype("datetime64[D]")).astype(np.int64) / days_in_year
    if name == "week_of_year":  # ISO weeks 1..53: week 53 lands where week 1 is
        return (_iso_week(day) - 1) / 52
    if name == "month_of_year":
        return month.astype(np.int64) % 12 / 12
    if name == "quarter_of_year":
        return month.astype(np.int64) % 12 // 3 / 4
    raise ConfigError(f"unknown calendar feature {name!r}: use one of {', '.join(CALENDAR_NAMES)}")


def _iso_week(day: np.ndarray) -> np.ndarray:
    """ISO 8601 week numbers (1..53, int64) of days since 1970-01-01, as pandas' ``isocalendar().week``: a week
    belongs to the year of its Thursday and counts from that year's first Thursday."""
    thursday = (day - (day + 3) % 7 + 3).astype("datetime64[D]")  # (day + 3) % 7: Monday 0
    return (thursday - thursday.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64) // 7 + 1


def _varies(freq: str, name: str) -> bool:
    """Whether ``name`` takes more than one value on a ``freq`` grid (hour_of_day on daily data does not)."""
    grid, step = _sample(freq)
    if step * _SAMPLE < _CYCLE_NS[name]:
        return True  # a fine step walks through the whole cycle eventually
    return bool(np.ptp(_positions(grid.asi8, name)) > 0)


def calendar_for(freq: str, spec: CalendarSpec, integer_time: bool) -> list[str]:
    """The calendar features to use at frequency ``freq`` for ``data.calendar`` = ``spec``.

    ``"auto"``: sub-daily steps (sub-hourly, hourly, 6-hourly) -> hour_of_day, day_of_week; daily and
    longer steps, integer time or an unknown frequency -> none (their cycle is the season the linear skip
    already models: measured, see ``_AUTO``).
    ``"none"`` -> ``[]``. A list is used as given, but a feature that is constant at ``freq`` (every
    timestamp has the same value, e.g. hour_of_day on daily data) or any feature with integer time is a
    ConfigError saying why.

    >>> calendar_for("h", "auto", integer_time=False)
    ['hour_of_day', 'day_of_week']
    >>> calendar_for("D", "auto", integer_time=False)
    []
    >>> calendar_for("MS", ["month_of_year"], integer_time=False)
    ['month_of_year']
    """
    import pandas as pd

    if spec == "none":
        return []
    if spec != "auto":
        names = list(spec)
        _check_names(names)
        if names and integer_time:
            raise ConfigError(f"data.calendar {names}: the time column holds integers (integer time), which carry "
                              "no calendar: set data.calendar: none, or give dates in the time column")
        constant = [n for n in names if not _varies(freq, n)]
        if constant:
            raise ConfigError(f"data.calendar: {', '.join(constant)} is constant on {freq!r} data (every timestamp "
                              "has the same value, so it carries no information): remove it from data.calendar")
        return names
    if integer_time:
        return []
    try:
        _, step = _sample(freq)
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return []
    for limit, names in _AUTO:
        if step < limit:
            return [n for n in names if _varies(freq, n)]
    return []


def calendar_channel_names(names: Sequence[str]) -> list[str]:
    """Column names of ``calendar_features``: ``<name>_sin``, ``<name>_cos`` per feature, in order.

    >>> calendar_channel_names(["hour_of_day", "day_of_week"])
    ['hour_of_day_sin', 'hour_of_day_cos', 'day_of_week_sin', 'day_of_week_cos']
    """
    return [f"{name}_{part}" for name in names for part in ("sin", "cos")]


def calendar_features(times: np.ndarray, names: Sequence[str], tz: str | None = None) -> np.ndarray:
    """(N, 2K) float32: sin and cos of each feature's position in its cycle, columns as
    ``calendar_channel_names(names)``; values in [-1, 1].

    ``times`` are UTC-naive datetime64[ns] as in a SeriesSet; with ``tz`` (the series' zone) positions
    are taken on the local wall clock, so hour_of_day follows the local day across DST changes.
    """
    import pandas as pd

    _check_names(names)
    out = np.empty((len(times), 2 * len(names)), dtype=np.float32)
    if not names:
        return out
    if not np.issubdtype(np.asarray(times).dtype, np.datetime64):
        raise DataError(f"calendar features {list(names)} need timestamps, got {np.asarray(times).dtype} times "
                        "(integer time has no calendar): set data.calendar: none")
    ns = np.asarray(times, dtype="datetime64[ns]").view(np.int64)
    if tz is not None:
        ns = pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC").tz_convert(tz).tz_localize(None).asi8
    for k, name in enumerate(names):
        angle = 2 * np.pi * _positions(ns, name)
        out[:, 2 * k] = np.sin(angle)
        out[:, 2 * k + 1] = np.cos(angle)
    return out


def future_times(last_time: np.datetime64 | np.integer | int, freq: str, horizon: int, integer_time: bool,
                 tz: str | None = None) -> np.ndarray:
    """The ``horizon`` time stamps after ``last_time`` on the ``freq`` grid.

    Integer time: int64 ``last + step * (1..H)`` with ``step = int(freq)``. Datetimes: UTC-naive
    datetime64[ns] (as SeriesSet times). Fixed steps are numpy arithmetic; calendar steps (days and
    coarser) use ``pd.date_range``, counting calendar days in zone ``tz`` when given, so a daily
    forecast stays at local midnight across DST (H13). A forecast running past what the type holds
    (2262-04-11 in pandas nanoseconds, or 2**63 for integers) is a DataError, never wrapped (D15).

    >>> future_times(np.int64(1970), "1", 3, integer_time=True).tolist()
    [1971, 1972, 1973]
    """
    if integer_time:
        return _future_steps(int(last_time), int(freq), horizon)
    import pandas as pd

    step = tick_ns(freq) if tz else fixed_step_ns(freq)
    start = int(np.datetime64(last_time, "ns").view(np.int64))
    if step is not None and start + step * horizon <= pd.Timestamp.max.value:
        return (start + step * np.arange(1, horizon + 1, dtype=np.int64)).view("datetime64[ns]")
    months = None if tz else _month_times(np.datetime64(last_time, "ns"), freq, horizon)
    if months is not None:
        return months
    if step is None:
        begin = pd.Timestamp(last_time)
        if tz:
            begin = begin.tz_localize("UTC").tz_convert(tz).tz_localize(None)
        try:
            times = pd.date_range(begin, periods=horizon + 1, freq=freq)[1:]
            if times.unit == "ns" and len(times) == horizon and times[-1] > begin:
                if tz:
                    times = times.tz_localize(tz, ambiguous=np.zeros(horizon, dtype=bool),
                                              nonexistent="shift_forward").tz_convert("UTC").tz_localize(None)
                return times.to_numpy(dtype="datetime64[ns]")
        except (OverflowError, pd.errors.OutOfBoundsDatetime):
            pass
    raise DataError(f"the {horizon} forecast timestamps after {pd.Timestamp(last_time)} ({freq!r} steps) run past "
                    f"{pd.Timestamp.max.floor('s')}, the last timestamp lstmcast can represent (pandas "
                    "nanoseconds): forecast a series that ends earlier or use a shorter horizon")


def _month_times(last: np.datetime64, freq: str, horizon: int) -> np.ndarray | None:
    """``pd.date_range``'s answer for month, quarter and year steps from a stamp on the grid at midnight, in
    numpy (a tenth of the time); None where it cannot say (off the grid, a time of day, past 2262)."""
    step = month_step(freq)
    if step is None:
        return None
    months, end = step
    month = last.astype("datetime64[M]")
    if month_stamps(np.array([month]), end)[0] != last or (month - _month_phase(freq)).astype(np.int64) % months:
        return None
    ahead = month + months * np.arange(1, horizon + 1)
    if ahead[-1] >= np.datetime64("2262-04", "M"):
        return None  # the pandas path below says how far lstmcast's timestamps reach
    return month_stamps(ahead, end)


@lru_cache(maxsize=64)
def _month_phase(freq: str) -> np.datetime64:
    """A month on the grid of ``freq`` (January for years, the starting month for quarters)."""
    import pandas as pd

    offset = pd.tseries.frequencies.to_offset(freq)
    first = getattr(offset, "startingMonth", None) or getattr(offset, "month", None) or 1
    return np.datetime64(f"2000-{first:02d}", "M")


def _future_steps(last: int, step: int, horizon: int) -> np.ndarray:
    if last + step * horizon > np.iinfo(np.int64).max:
        raise DataError(f"the {horizon} forecast steps after time {last} (step {step}) run past {2**63 - 1}, the "
                        "largest integer time lstmcast can hold: renumber the time column")
    return last + step * np.arange(1, horizon + 1, dtype=np.int64)
