"""Validation of a long table (one row per series and timestamp) in whole-table numpy passes.

``validate.validate_frame`` checks each series in a Python loop: a pandas group, a sort, a
``date_range`` grid and a fill per series cost ~0.5 ms each, 5 s on 10,000 series, ten times the
model's forecast of all of them (benchmarks/many_series.py). Here the same checks run once over
the whole table: series codes from one ``factorize``, one stable sort by (series, time), duplicates,
grid and gaps as integer arithmetic on nanoseconds, gap filling with segment-wise running indices.

This path only accepts: whatever it cannot prove clean or fill exactly as the loop would (a duplicate,
an off-grid stamp, a gap under ``missing: error``, a calendar frequency such as months, gaps in zoned
daily data, ids that are not plain values) returns ``None``, and the caller runs the per-series loop,
which produces the precise error messages. Both paths give the same SeriesSet for the same table
(tests/unit/test_longtable.py compares them).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from .grid import label, regularise_zoned, wall_clock
from .io import Rows

if TYPE_CHECKING:
    import pandas as pd

    from ..config import DataConfig
    from .io import Rows

log = logging.getLogger(__name__)
_DAY_NS = 86_400 * 10**9


def _codes(raw: pd.Series) -> tuple[np.ndarray, list[str]] | None:
    """Series codes in the order ``groupby(sort=True)`` gives (it factorizes the same way), or None."""
    import pandas as pd

    if isinstance(raw.dtype, pd.CategoricalDtype):
        return None  # groupby orders categories by their declared order: the loop handles it
    try:
        codes, uniques = pd.factorize(raw, sort=True)
    except TypeError:  # ids of mixed types that do not sort
        return None
    if len(codes) and codes.min() < 0:
        return None  # empty ids: the loop names their rows
    ids = [str(u) for u in uniques]
    if any(not s.strip() for s in ids) or len(set(ids)) != len(ids):
        return None  # blank ids, or two ids that print alike (1 and '1')
    return codes.astype(np.int32 if len(ids) < 2**31 else np.int64), ids  # half the memory of intp


def _step_ns(freq: str, integer_time: bool = False) -> int | None:
    """A fixed step in ns (sub-daily ticks, whole days on naive times), the step of integer time (freq "5"),
    or None for calendar frequencies."""
    import pandas as pd

    if integer_time:
        return int(freq)
    offset = pd.tseries.frequencies.to_offset(freq)
    if isinstance(offset, pd.offsets.Tick):
        return int(pd.Timedelta(offset).value)
    if isinstance(offset, pd.offsets.Day):
        return int(offset.n) * _DAY_NS
    return None


def _first_freq(t: np.ndarray, vals: np.ndarray, rows: Any, cfg: DataConfig, sid: str,
                tz: str | None) -> str | None:
    """The first series sets the frequency for all (as in the loop); None if it raises (the loop explains)."""
    try:
        return regularise_zoned(t, vals, rows, cfg, sid, None if cfg.freq is None else str(cfg.freq), tz)[2]
    except DataError:
        return None


def validate_long(df: pd.DataFrame, cfg: DataConfig, times: np.ndarray, numeric: dict[str, np.ndarray],
                  cols: list[str], tz: str | None) -> tuple[list[str], list[np.ndarray], list[np.ndarray], str,
                                                            list[str]] | None:
    """(ids, times, values, freq, notes) of every series of a long table, or None for the per-series loop.

    ``times`` (N,) UTC-naive datetime64[ns] (or int64 steps for integer time) and ``numeric`` (N,) float64 per column
    (float32 for a float32 column) are the table's checked columns (validate_frame parses them once for both
    paths). At 4.6M rows each int64 copy is 35 MB, so scratch arrays are dropped or reused as soon as they are
    spent, and float32 columns stay float32 (only the rows a fill computes are float64, as in the loop).
    """
    integer_time = times.dtype.kind in "iu"  # int64 steps (times.py), else datetime64[ns]
    got = _codes(df[cfg.id_col])
    if got is None:
        return None
    codes, ids = got
    del got  # the tuples would keep the spent arrays alive
    counts = np.bincount(codes, minlength=len(ids))
    longs = np.flatnonzero(counts >= 3)  # the first series of 3 rows or more shows the table's step (1 or 2 cannot)
    if not len(longs):
        return None
    k = int(longs[0])
    ordered = _order(codes, times.view(np.int64), counts)
    del codes
    if ordered is None:
        return None
    order, ts, cs, moved = ordered
    del ordered
    lo = int(counts[:k].sum())
    first = slice(lo, lo + counts[k]) if order is None else order[lo:lo + counts[k]]
    first_rows = Rows(df["__row__"].to_numpy()[first], df.attrs.get("row_kind", "row"))
    if order is None:  # in table order: the table's arrays themselves (copied below before any write)
        vals = numeric[cols[0]][:, None] if len(cols) == 1 else np.column_stack([numeric[c] for c in cols])
    else:
        vals = np.column_stack([numeric[c][order] for c in cols])  # (N, C) series by series
    del order
    gridded = _on_grid(ts, vals, cs, counts, first_rows, ids[k], cfg, tz, integer_time, k)
    if gridded is None:
        return None
    ts, vals, counts, freq = gridded
    if np.isnan(vals).any():
        if cfg.missing == "error":
            return None
        if cfg.missing in ("interpolate", "ffill"):
            if not vals.flags.owndata:  # a view of the caller's column (maybe of the user's frame)
                vals = vals.copy()
            _fill_series_with_gaps(vals, counts, cfg.missing)
    notes = _sort_notes(ids, moved)
    cut = np.cumsum(counts)[:-1]
    own = vals.flags.owndata and vals.dtype == np.float32  # already a fresh float32 array: no second copy
    out_v = np.split(vals if own else vals.astype(np.float32), cut)
    return ids, np.split(ts if integer_time else ts.view("datetime64[ns]"), cut), out_v, freq, notes


def _order(codes: np.ndarray, t: np.ndarray, counts: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Rows by series, then time (stable, D4): (order, sorted stamps, series of each sorted row, rows each
    series' sort moved or None if none was out of order); None on a duplicated timestamp (D3)."""
    if not np.any(codes[1:] < codes[:-1]):  # rows already grouped by series (the usual table): no copies
        order, ts, cs = None, t, codes
    else:
        order = np.argsort(codes, kind="stable")  # each series' rows in table order (the loop's groups)
        ts = t[order]
        cs = np.repeat(np.arange(len(counts), dtype=codes.dtype), counts)
    moved = None
    if np.any((ts[1:] < ts[:-1]) & (cs[1:] == cs[:-1])):  # rows out of time order within a series
        grouped, order = np.arange(len(t)) if order is None else order, np.lexsort((t, codes))
        ts = t[order]
        moved = np.bincount(cs, weights=order != grouped, minlength=len(counts)).astype(np.int64)
    if np.any((ts[1:] == ts[:-1]) & (cs[1:] == cs[:-1])):
        return None  # a duplicated timestamp: the loop names both rows
    return order, ts, cs, moved


def _on_grid(ts: np.ndarray, vals: np.ndarray, cs: np.ndarray, counts: np.ndarray, first_rows: Rows,
             first_id: str, cfg: DataConfig, tz: str | None, integer_time: bool, k: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str] | None:
    """Every series on the first series' grid (D2, D5), gaps inserted as NaN rows; None where the loop
    must explain (off-grid stamps, gaps under ``missing: error``, calendar steps, gaps in zoned days)."""
    lo = int(counts[:k].sum())
    first = slice(lo, lo + counts[k])  # series k, the first long enough to show the step
    freq = _first_freq(ts[first] if integer_time else ts[first].view("datetime64[ns]"), vals[first], first_rows,
                       cfg, first_id, tz)
    step = None if freq is None else _step_ns(freq, integer_time)
    if step is None:
        return None
    on_calendar = tz is not None and not isinstance(_offset(freq), _tick())
    grid_t = wall_clock(ts.view("datetime64[ns]"), tz).view(np.int64) if on_calendar else ts
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    t0 = grid_t[starts]
    rel = t0[cs]  # in place from here
    np.subtract(grid_t, rel, out=rel)
    del grid_t
    if any(np.any(rel[i:i + 2**20] % step) for i in range(0, len(rel), 2**20)):  # in chunks: no 35 MB copy
        return None  # off the grid: the loop says which stamps
    n_grid = rel[starts + counts - 1] // step + 1
    if np.any(n_grid != counts):  # gaps
        if cfg.missing == "error" or on_calendar:
            return None
        rel //= step  # each row's step on its series' grid, as int32 where the rows allow: half the scratch
        k = rel.astype(np.int32 if int(n_grid.sum()) < 2**31 else np.int64)
        del rel
        ts, vals, counts = _insert_gaps(ts, vals, cs, k, t0, n_grid, step)
    return ts, vals, counts, str(freq)


def _offset(freq: str) -> Any:
    import pandas as pd

    return pd.tseries.frequencies.to_offset(freq)


def _tick() -> type:
    import pandas as pd

    return pd.offsets.Tick


def _sort_notes(ids: list[str], moved: np.ndarray | None) -> list[str]:
    """D4: one note per series whose rows were not in time order, with how many rows the stable sort moved."""
    notes: list[str] = []
    for i in np.flatnonzero(moved) if moved is not None else []:
        notes.append(f"{label(ids[i])}: {moved[i]} rows were not in time order; sorted them by time (stable sort)")
        log.info(notes[-1])
    return notes


def _insert_gaps(ts: np.ndarray, vals: np.ndarray, cs: np.ndarray, k: np.ndarray, t0: np.ndarray,
                 n_grid: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every series on its full grid from its first to its last stamp; missing steps as NaN rows (D2)."""
    new_starts = np.concatenate([[0], np.cumsum(n_grid)[:-1]])
    dest = k  # each row's place on its series' grid (k is the caller's scratch array)
    dest += new_starts.astype(k.dtype)[cs]
    total = int(n_grid.sum())
    full_t = np.empty(total, dtype=np.int64)
    full_t[dest] = ts
    holes = np.ones(total, dtype=bool)
    holes[dest] = False
    at = np.flatnonzero(holes)  # only the inserted rows need their series and stamp computed
    seg = np.searchsorted(new_starts, at, side="right") - 1
    full_t[at] = t0[seg] + (at - new_starts[seg]) * step
    full_v = np.full((total, vals.shape[1]), np.nan, dtype=vals.dtype)
    full_v[dest] = vals
    return full_t, full_v, n_grid


def _fill_series_with_gaps(vals: np.ndarray, counts: np.ndarray, policy: str) -> None:
    """``_fill`` on the rows of the series that have a missing value only (few, usually)."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # every series has a row (factorize codes)
    holed = np.logical_or.reduceat(np.isnan(vals).any(axis=1), starts)  # no row-sized series index
    rows = np.repeat(holed, counts)
    sub = vals[rows].astype(np.float64, copy=False)  # float32 series are filled in float64, as the loop does
    _fill(sub, np.repeat(np.arange(int(holed.sum())), counts[holed]), counts[holed], policy)
    vals[rows] = sub


def _fill(vals: np.ndarray, seg: np.ndarray, counts: np.ndarray, policy: str) -> None:
    """In place, per series and column, as pandas does it per series: ``interpolate(method='linear',
    limit_direction='both')`` (np.interp between the neighbours, the edge value beyond them) or
    ``ffill().bfill()``; a column with no value in a series stays NaN."""
    n = len(vals)
    idx = np.arange(n)
    seg_start = np.concatenate([[0], np.cumsum(counts)[:-1]])[seg]
    seg_end = seg_start + counts[seg] - 1
    for j in np.flatnonzero(np.isnan(vals).any(axis=0)):
        v = vals[:, j]
        valid = ~np.isnan(v)
        prev = np.maximum.accumulate(np.where(valid, idx, -1))
        nxt = np.minimum.accumulate(np.where(valid, idx, n)[::-1])[::-1]
        hole = ~valid
        has_prev = hole & (prev >= seg_start)
        has_next = hole & (nxt <= seg_end)
        both = has_prev & has_next
        out = v.copy()
        if policy == "interpolate":
            p, q, x = prev[both], nxt[both], idx[both]
            slope = (v[q] - v[p]) / (q - p)  # np.interp's formula, so the values match pandas bit for bit
            out[both] = slope * (x - p) + v[p]
            only = has_prev & ~has_next
            out[only] = v[prev[only]]
        else:
            out[has_prev] = v[prev[has_prev]]
        only = has_next & ~has_prev
        out[only] = v[nxt[only]]
        vals[:, j] = out
