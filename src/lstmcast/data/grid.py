"""The time grid of one series: its frequency (inferred or given), and gaps or off-grid stamps (D2, D5).

Pure numpy/pandas on sorted, unique timestamps; the caller (validate.py) owns sorting and duplicates.
Integer time (int64 steps, see times.py) follows the same rules with an integer step; its ``freq`` is
the step as text ("1").
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    from ..config import DataConfig
    from .io import Rows

MAX_LISTED = 5
_MAX_LISTED = MAX_LISTED
_CALENDAR = ("MS", "ME", "QS", "QE", "YS", "YE")


def label(sid: str) -> str:
    return f"series {sid!r}" if sid else "the series"


def stamp(value: object) -> object:
    """A time as messages show it: a Timestamp for datetime64, a plain int for integer time."""
    import pandas as pd

    if isinstance(value, np.datetime64):
        return pd.Timestamp(value)
    return int(value) if isinstance(value, np.integer) else value


def fmt(arr: np.ndarray | Rows | list) -> str:
    import pandas as pd

    head = arr[:_MAX_LISTED]
    if isinstance(arr, np.ndarray) and np.issubdtype(arr.dtype, np.datetime64):
        head = [pd.Timestamp(a) for a in head]
    shown = ", ".join(str(a) for a in head)
    return shown + (f" and {len(arr) - _MAX_LISTED} more" if len(arr) > _MAX_LISTED else "")


def _infer_freq(times: np.ndarray, rows: Rows, label: str) -> str:
    """The series' step: pandas' inference, else the commonest step if every step is a multiple of it (D5)."""
    import pandas as pd

    with warnings.catch_warnings():  # pandas 3 warns that infer_freq will return an offset
        warnings.filterwarnings("ignore", message=".*infer_freq.*")
        inferred = pd.infer_freq(pd.DatetimeIndex(times))
    if inferred is not None:
        return str(getattr(inferred, "freqstr", inferred))
    steps = np.diff(times)
    uniq, counts = np.unique(steps, return_counts=True)
    step = uniq[np.argmax(counts)]
    odd = steps % step != np.timedelta64(0)
    if odd.any() and (calendar := _calendar_freq(times)) is not None:
        return calendar  # monthly, quarterly or yearly data with gaps: the gaps are handled as such (D2)
    if odd.any():
        order = np.argsort(-counts)[:_MAX_LISTED]
        shown = ", ".join(f"{pd.Timedelta(uniq[k])} ({counts[k]}x)" for k in order)
        k = int(np.argmax(odd))
        raise DataError(f"{label} is not on a regular time grid: observed steps {shown}; the first step that is "
                        f"not a multiple of {pd.Timedelta(step)} is {pd.Timedelta(steps[k])} between {rows[k]} and "
                        f"{rows[k + 1]}. Set data.freq (e.g. 'h', '15min', 'D', 'W-SAT', 'MS') to the intended "
                        "frequency, or resample the data to one frequency")
    return pd.tseries.frequencies.to_offset(pd.Timedelta(step)).freqstr


def _calendar_freq(times: np.ndarray) -> str | None:
    """The coarsest calendar frequency whose grid holds every timestamp (months have unequal steps)."""
    import pandas as pd

    best: tuple[int, str] | None = None
    for alias in _CALENDAR:
        try:
            grid = pd.date_range(times[0], times[-1], freq=alias).to_numpy(dtype="datetime64[ns]")
        except ValueError:  # an alias this pandas does not know
            continue
        if len(grid) == 0 or len(grid) > 2 * len(times):
            continue
        pos = np.minimum(np.searchsorted(grid, times), len(grid) - 1)
        if (grid[pos] == times).all() and (best is None or len(grid) < best[0]):
            best = (len(grid), alias)
    return None if best is None else pd.tseries.frequencies.to_offset(best[1]).freqstr


def _even_step(times: np.ndarray) -> int | None:
    """The common step in ns when every step is equal and shorter than a day; else None. Daily and longer
    steps go to pandas' inference, which names them 'D', 'W-SAT', ... (the step alone would say '24h')."""
    ints = times.view(np.int64)
    first = int(ints[1] - ints[0])
    if not 0 < first < 86_400 * 10**9:
        return None
    return first if bool((np.diff(ints) == first).all()) else None


def regularise(times: np.ndarray, values: np.ndarray, rows: Rows, cfg: DataConfig,
                name: str, freq: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Put the series on its regular grid: gaps are refused (D2) or inserted as NaN for the fill policy."""
    import pandas as pd

    where = label(name)
    if len(times) < 3 and (freq is None or len(times) == 0):  # a table's short series: the others set the step
        raise DataError(f"{where} has {len(times)} rows; a forecaster needs many more (at least window + horizon)")
    if times.dtype.kind in "iu":
        return _regularise_int(times, values, rows, cfg, where, freq)
    step = _even_step(times) if len(times) > 1 else None
    if step is not None:  # evenly spaced at a sub-daily step: on its grid, no gaps, nothing to build
        tick = pd.tseries.frequencies.to_offset(pd.Timedelta(step))
        if freq is None:
            return times, values, tick.freqstr
        given = pd.tseries.frequencies.to_offset(freq)
        if isinstance(given, pd.offsets.Tick) and pd.Timedelta(given) == pd.Timedelta(step):
            return times, values, freq
    if freq is None:
        freq = _infer_freq(times, rows, where)
    grid = pd.date_range(times[0], times[-1], freq=freq).to_numpy(dtype="datetime64[ns]")
    pos = np.searchsorted(grid, times)  # times are sorted and unique here
    on_grid = grid[np.minimum(pos, len(grid) - 1)] == times if len(grid) else np.zeros(len(times), dtype=bool)
    if not on_grid.all():
        raise DataError(f"{where}: timestamps {fmt(times[~on_grid])} (at {fmt(rows[~on_grid])}) are off the "
                        f"{freq!r} grid starting {pd.Timestamp(times[0])}: fix data.freq or resample the data")
    if len(grid) != len(times):
        present = np.zeros(len(grid), dtype=bool)
        present[pos] = True
        gaps = grid[~present]
        if cfg.missing == "error":
            raise DataError(f"{where} has {len(gaps)} missing timestamps (gaps) on the {freq!r} grid: "
                            f"{fmt(gaps)}. Set data.missing to interpolate, ffill or drop-windows to fill "
                            "them explicitly (CLI: --set data.missing=interpolate), or add the rows")
        full = np.full((len(grid), values.shape[1]), np.nan)
        full[pos] = values
        times, values = grid, full
    return times, values, freq


def _int_step(times: np.ndarray, rows: Rows, where: str) -> int:
    """The commonest step of integer times, if every step is a multiple of it (gaps); else a DataError (D5)."""
    steps = np.diff(times)
    uniq, counts = np.unique(steps, return_counts=True)
    step = int(uniq[np.argmax(counts)])
    odd = steps % step != 0
    if odd.any():
        order = np.argsort(-counts)[:_MAX_LISTED]
        shown = ", ".join(f"{int(uniq[k])} ({counts[k]}x)" for k in order)
        k = int(np.argmax(odd))
        raise DataError(f"{where} is not on a regular grid of integer times: observed steps {shown}; the first step "
                        f"that is not a multiple of {step} is {int(steps[k])} (from {int(times[k])} to "
                        f"{int(times[k + 1])}, {rows[k]} and {rows[k + 1]}). Set data.freq to the intended integer "
                        "step (e.g. data.freq: 1), or fix the time column")
    return step


def _regularise_int(times: np.ndarray, values: np.ndarray, rows: Rows, cfg: DataConfig, where: str,
                    freq: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """``regularise`` for integer time: off-grid values and gaps checked with integer arithmetic."""
    step = int(freq) if freq is not None else _int_step(times, rows, where)
    rel = times - times[0]
    off = rel % step != 0
    if off.any():
        raise DataError(f"{where}: times {fmt(times[off])} (at {fmt(rows[off])}) are off the grid of step {step} "
                        f"starting at {int(times[0])}: fix data.freq (the integer step) or the time column")
    pos = rel // step
    n_grid = int(pos[-1]) + 1
    if n_grid == len(times):
        return times, values, str(step)
    gaps = np.flatnonzero(np.diff(pos) > 1)
    n_missing = n_grid - len(times)
    if cfg.missing == "error":  # listed from the steps: a huge gap is never built as an array here
        shown = [f"{int(times[k]) + step}" + (f"..{int(times[k + 1]) - step}" if times[k + 1] - times[k] > 2 * step
                                              else "") for k in gaps[:_MAX_LISTED]]
        more = f" and {len(gaps) - _MAX_LISTED} more gaps" if len(gaps) > _MAX_LISTED else ""
        raise DataError(f"{where} has {n_missing} missing times (gaps) on the grid of step {step}: "
                        f"{', '.join(shown)}{more}. Set data.missing to interpolate, ffill or drop-windows to fill "
                        "them explicitly (CLI: --set data.missing=interpolate), or add the rows")
    if n_missing > 10 * len(times) + 10**6:
        raise DataError(f"{where}: filling its gaps would add {n_missing} rows to {len(times)}: check the time "
                        "column and data.freq (the integer step)")
    full = np.full((n_grid, values.shape[1]), np.nan)
    full[pos] = values
    return times[0] + step * np.arange(n_grid, dtype=np.int64), full, str(step)


def _on_calendar_days(times: np.ndarray, freq: str | None) -> bool:
    """Daily and coarser steps count calendar days in the series' zone (a DST day lasts 23 or 25 hours, H13);
    fixed steps (hours, '15min', '24h') count elapsed time, which UTC already does."""
    import pandas as pd

    if freq is not None:
        return not isinstance(pd.tseries.frequencies.to_offset(freq), pd.offsets.Tick)
    steps = np.diff(times)
    return len(steps) > 0 and np.median(steps) >= np.timedelta64(23, "h")


def wall_clock(times: np.ndarray, tz: str) -> np.ndarray:
    """UTC-naive datetime64[ns] -> the same instants as naive local time in ``tz``."""
    import pandas as pd

    return pd.DatetimeIndex(times).tz_localize("UTC").tz_convert(tz).tz_localize(None).to_numpy("datetime64[ns]")


def regularise_zoned(times: np.ndarray, values: np.ndarray, rows: Rows, cfg: DataConfig, name: str,
                     freq: str | None, tz: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """``regularise`` for zoned data: daily and coarser grids are built on local calendar days (H13)."""
    import pandas as pd

    if tz is None or not _on_calendar_days(times, freq):
        return regularise(times, values, rows, cfg, name, freq)
    local = wall_clock(times, tz)
    grid, values, freq = regularise(local, values, rows, cfg, name, freq)
    if len(grid) == len(times):
        return times, values, freq
    # inserted gap rows: local midnights back to UTC (a midnight skipped by DST moves forward)
    zoned = pd.DatetimeIndex(grid).tz_localize(tz, ambiguous=np.zeros(len(grid), dtype=bool),
                                               nonexistent="shift_forward")
    return zoned.tz_convert("UTC").tz_localize(None).to_numpy("datetime64[ns]"), values, freq
