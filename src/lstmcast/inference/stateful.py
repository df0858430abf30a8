"""Streaming with a carried state (model.stateful, issue 24): each series' (h, c) advanced one LSTM step per new
observation, and forecasts made from it without changing it.

``burn_in`` runs whole histories from a zero state; ``update`` advances the states by the rows after each
series' last seen time (rows at or before it are ignored, so an update repeated is a no-op); ``forecast`` reads
the states. An update is checked whole before anything is applied: a gap, an out-of-order or a non-finite row
is a DataError naming the series and rows, and the states are left as they were.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lstmcast.data import transform
from lstmcast.errors import DataError, short
from lstmcast.inference.carry import model_rows, one_step
from lstmcast.inference.fastpath import one_thread_for_few
from lstmcast.inference.frames import forecast_table
from lstmcast.inference.predict import check_compatible, model_inputs, series_scalers
from lstmcast.model.quantiles import calibrated
from lstmcast.run.carried import CarriedStates

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.config import ForecastConfig
    from lstmcast.data.validate import SeriesSet
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.run.meta import RunMeta

STEP_BATCH = 16_384  # series per LSTM call in an update (one step for each is one small GEMM per gate block)
FEW_SERIES = 4  # an update of at most this many series steps each on its own, without gathering a batch
_NO_TIME = np.iinfo(np.int64).min
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class UpdateSummary:
    """What an update did: series advanced, observations applied, rows ignored (at or before a series' last
    seen time) and the series seen for the first time (started from a zero state)."""

    series_updated: int = 0
    rows_applied: int = 0
    rows_ignored: int = 0
    new_series: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def time_kind(meta: RunMeta) -> str:
    return "int64-steps" if meta.integer_time else "datetime64[ns]"


def empty_states(model: LSTMForecaster, meta: RunMeta) -> CarriedStates:
    D = model.num_directions
    return CarriedStates.empty(model.num_layers * D, model.hidden_size, D * model.hidden_size,
                               len(channel_names(meta)))


def channel_names(meta: RunMeta) -> list[str]:
    """The channels a carried state's scaling covers: targets (one "value" wide), features, future features."""
    return (["value"] if meta.layout == "wide" else list(meta.targets)) + list(meta.features) + \
        list(meta.future_features or [])


def _as_int(times: np.ndarray) -> np.ndarray:
    return times.astype(np.int64) if times.dtype.kind in "iu" else times.astype("datetime64[ns]").view(np.int64)


def _from_int(t: np.ndarray, meta: RunMeta) -> np.ndarray:
    return t.astype(np.int64) if meta.integer_time else t.view("datetime64[ns]")


def advance(model: LSTMForecaster, states: CarriedStates, rows: list[int], x: np.ndarray,
            counts: np.ndarray) -> None:
    """States ``rows`` advanced in place by their ``counts`` rows of ``x`` (concatenated in ``rows`` order): one
    LSTM step per row, series with the same number of new rows in one batch (up to ``FEW_SERIES`` series: one
    call each, on plain slices)."""
    if not len(rows):
        return
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    xt = torch.from_numpy(x)
    with torch.inference_mode(), one_thread_for_few(len(rows)):  # a few series' steps: one thread is faster
        if len(rows) <= FEW_SERIES:
            for r, a, n in zip(rows, starts.tolist(), counts.tolist()):
                if n:
                    _advance_one(model, states, int(r), xt[a:a + n])
            return
        rows_a = np.asarray(rows, dtype=np.int64)
        for n in np.unique(counts).tolist():
            if n == 0:
                continue
            group = np.flatnonzero(counts == n)
            for a in range(0, len(group), STEP_BATCH):
                g = group[a:a + STEP_BATCH]
                take = torch.from_numpy((starts[g][:, None] + np.arange(n)).reshape(-1))
                xb = xt[take].view(len(g), n, x.shape[1])
                idx = torch.from_numpy(rows_a[g])
                state = (states.h[idx].transpose(0, 1).contiguous(), states.c[idx].transpose(0, 1).contiguous())
                out, (h, c) = model.encode(xb, state)
                states.h[idx] = h.transpose(0, 1)
                states.c[idx] = c.transpose(0, 1)
                states.out[idx] = out[:, -1]


def _advance_one(model: LSTMForecaster, states: CarriedStates, r: int, x: torch.Tensor) -> None:
    """State row ``r`` advanced in place by the rows ``x`` (n, F): the batched step of one series, on slices (the
    index tensors, gathers and scatters of a batch cost more than the step itself for one series)."""
    h0, c0 = states.h[r:r + 1].transpose(0, 1), states.c[r:r + 1].transpose(0, 1)  # (layers * D, 1, hidden)
    step = one_step(model, x, h0, c0) if len(x) == 1 else None  # one new row: the fused cells
    if step is None:
        out, (h, c) = model.encode(x[None], (h0.contiguous(), c0.contiguous()))  # (1, n, hidden)
        step = out[:, -1], h, c
    states.h[r] = step[1][:, 0]
    states.c[r] = step[2][:, 0]
    states.out[r] = step[0][0]


def burn_in(model: LSTMForecaster, series: SeriesSet, meta: RunMeta, scaler: dict[str, np.ndarray]) -> CarriedStates:
    """Every series' state after its whole history, from zero (a fresh stateful run)."""
    states = empty_states(model, meta)
    summary = UpdateSummary()
    _apply(model, states, series, meta, scaler, summary)
    return states


def update(model: LSTMForecaster, states: CarriedStates, series: SeriesSet, meta: RunMeta,
           scaler: dict[str, np.ndarray]) -> tuple[CarriedStates, UpdateSummary]:
    """New states (a copy: ``states`` is left as it was) advanced by the rows of ``series`` after each series'
    last seen time, and what was done. Checked whole first: nothing is applied when a row is refused."""
    new = states.copy()
    summary = UpdateSummary()
    _apply(model, new, series, meta, scaler, summary)
    return new, summary


def _apply(model: LSTMForecaster, states: CarriedStates, series: SeriesSet, meta: RunMeta,
           scaler: dict[str, np.ndarray], summary: UpdateSummary) -> None:
    pos = states.position()
    fresh = [i for i, s in enumerate(series.ids) if s not in pos]
    if fresh:
        sub = dataclasses.replace(series, ids=[series.ids[i] for i in fresh],
                                  values=[series.values[i] for i in fresh], times=[series.times[i] for i in fresh],
                                  static=None)
        mean, std = series_scalers(sub, meta, scaler)
        states.add(sub.ids, mean, std)
        summary.new_series = list(sub.ids)
        pos = states.position()
    rows = np.fromiter((pos[s] for s in series.ids), dtype=np.int64, count=len(series.ids))
    lengths = np.fromiter((len(t) for t in series.times), dtype=np.int64, count=len(series.ids))
    flat_t = _as_int(np.concatenate(series.times)) if len(lengths) else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    last = states.last_time[rows]
    old = flat_t <= last[owner]  # rows at or before the series' last seen time: ignored
    starts = np.bincount(owner, weights=old, minlength=len(lengths)).astype(np.int64)
    _check_rows(series, meta, last, starts, lengths, flat_t, owner, old)
    summary.rows_ignored = int(starts.sum())
    todo = np.flatnonzero(starts < lengths)
    mean, std = states.mean.numpy()[rows[todo]], states.std.numpy()[rows[todo]]
    x, counts = model_rows(series, meta, mean, std, todo, starts[todo])
    if not np.isfinite(x).all():  # D14: an overflow after scaling, or a value the checks let through
        bad = np.repeat(todo, counts)[~np.isfinite(x).all(axis=1)]
        raise DataError(f"rows of series {_ids(series, bad)} are not finite after scaling (they lie far outside "
                        "the training range): nothing was applied")
    advance(model, states, rows[todo].tolist(), x, counts)
    ends = np.cumsum(lengths) - 1
    states.last_time[rows[todo]] = flat_t[ends[todo]]
    states.rows[rows[todo]] += counts
    summary.series_updated = len(todo)
    summary.rows_applied = int(counts.sum())


def _ids(series: SeriesSet, idx: np.ndarray) -> str:
    names = sorted({series.ids[i] or "the series" for i in idx.tolist()})
    return ", ".join(short(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _fmt(t: Any) -> str:
    return str(t) if isinstance(t, (int, np.integer)) else np.datetime_as_string(np.datetime64(t, "s"))


def _next_times(last: np.ndarray, meta: RunMeta) -> np.ndarray:
    """The grid step after each last time (int64): ``last + step`` on a fixed-length grid (as
    calendar.future_times computes it), else computed once per distinct last time."""
    from lstmcast.data.calendar import fixed_step_ns, future_times, tick_ns

    step = int(meta.freq) if meta.integer_time else (tick_ns(meta.freq) if meta.tz else fixed_step_ns(meta.freq))
    if step is not None and step > 0 and bool((last <= np.iinfo(np.int64).max - step).all()):
        return last + step  # future_times' own arithmetic; past the int64 range it raises the DataError below
    uniq, inv = np.unique(last, return_inverse=True)
    nxt = np.array([_as_int(future_times(_from_int(np.array([u]), meta)[0], meta.freq, 1,
                                         bool(meta.integer_time), meta.tz))[0] for u in uniq.tolist()], np.int64)
    return nxt[inv] if len(uniq) else np.zeros(0, np.int64)


def _check_rows(series: SeriesSet, meta: RunMeta, last: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                flat_t: np.ndarray, owner: np.ndarray, old: np.ndarray) -> None:
    """Refuse (DataError, nothing applied) a gap between a series' last seen time and its first new row, and a
    non-finite value in the new rows, naming the series and times."""
    problems: dict[int, str] = {}
    flat_v = np.concatenate(series.values) if len(lengths) else np.zeros((0, 1), np.float32)
    bad = ~old & ~np.isfinite(flat_v).all(axis=1)
    for i in np.unique(owner[bad])[:5].tolist():
        at = ", ".join(_fmt(_from_int(np.array([v]), meta)[0]) for v in flat_t[bad & (owner == i)][:3])
        problems[i] = f"{int((bad & (owner == i)).sum())} rows with a missing or non-finite value (at {at})"
    seen = np.flatnonzero((last != _NO_TIME) & (starts < lengths))
    if len(seen):
        first = flat_t[np.concatenate([[0], np.cumsum(lengths)[:-1]])[seen] + starts[seen]]
        want = _next_times(last[seen], meta)
        for k in np.flatnonzero(first != want)[:5].tolist():
            i = int(seen[k])
            problems.setdefault(i, f"its state ends at {_fmt(_from_int(last[i:i + 1], meta)[0])} but the next row "
                                   f"given is at {_fmt(_from_int(first[k:k + 1], meta)[0])} (a gap: the next row "
                                   f"must be at {_fmt(_from_int(want[k:k + 1], meta)[0])})")
    if problems:
        shown = "; ".join(f"{'series ' + short(series.ids[i]) if series.ids[i] else 'the series'}: {p}"
                          for i, p in sorted(problems.items())[:5])
        raise DataError("update refused, nothing applied: " + shown + ": give each series' rows without gaps from "
                        "the step after its last update (fill missing values first)")


def check_order(table: pd.DataFrame, cfg: ForecastConfig) -> None:
    """Rows of each series must come in increasing time order in an update (an out-of-order row is refused,
    not sorted: a stream that went back in time is a fault upstream)."""
    from lstmcast.data.times import parse_times

    times, _, _ = parse_times(table, cfg.data)
    t = _as_int(np.asarray(times))
    key = table[cfg.data.id_col].astype(str).to_numpy() if cfg.data.id_col else np.zeros(len(t), dtype=object)
    rownum = table["__row__"].to_numpy() if "__row__" in table.columns else np.arange(len(t)) + 2
    order = np.argsort(key, kind="stable")
    k, tt, rr = key[order], t[order], rownum[order]
    back = np.flatnonzero((k[1:] == k[:-1]) & (tt[1:] <= tt[:-1])) + 1
    if len(back):
        shown = "; ".join(f"series {short(str(k[j]))} row {rr[j]} is not after row {rr[j - 1]}" for j in back[:5])
        raise DataError(f"update refused, nothing applied: rows out of time order ({shown}): give each series' "
                        "rows in increasing time order, each time once")


def read_update(source: Any, cfg: ForecastConfig, meta: RunMeta) -> SeriesSet:
    """New rows (a path or a DataFrame in predict's input layout) validated for an update: no gaps filled
    (data.missing is error for an update), the training columns and grid."""
    from lstmcast.data.io import read_table, warnings_as_log
    from lstmcast.data.validate import validate_frame

    if type(source).__name__ == "DataFrame":
        clean = fast_update_series(source, meta)
        if clean is not None:
            return clean
    with warnings_as_log("the update"):
        table = read_table(source, cfg.data.delimiter, cfg.data.id_col, cfg.data.decimal)
    check_order(table, cfg)
    # horizon 0: an update of one row a series is not a training table (validate refuses series too short to train)
    strict = cfg.data.model_copy(update={"missing": "error", "horizon": 0, "freq": meta.freq if not meta.integer_time
                                         else cfg.data.freq})
    try:
        series = validate_frame(table, strict, cfg.train.precision)
    except DataError as exc:
        raise DataError(f"update refused, nothing applied: {exc}") from None
    check_compatible(series, meta.model_copy(update={"window": 1, "mask_channel": True}))  # any number of rows
    return series


def fast_update_series(df: pd.DataFrame, meta: RunMeta) -> SeriesSet | None:
    """The SeriesSet of an already clean table of new rows, long or single (numpy checks, no per-series pandas: the
    general validation took 27 s for one row of each of 20k series, and ~10 ms for one row of one series), or None
    for the general path, which accepts and refuses the same tables and explains. Clean: naive datetime64 times
    on a fixed step of the training grid, each series' rows in order and on the grid, numeric finite values
    within float32, no statics. Each column is read once (a DataFrame column costs ~20 us)."""
    from lstmcast.data.calendar import fixed_step_ns
    from lstmcast.data.validate import TIME_RANGE, SeriesSet

    long = meta.layout == "long"
    if meta.layout not in ("long", "single") or meta.tz or meta.integer_time or meta.future_features:
        return None
    step = fixed_step_ns(meta.freq)
    cols = [meta.time_col, *([meta.id_col] if long else []), *meta.targets, *meta.features]
    if step is None or not len(df) or not df.columns.is_unique or not all(c in df.columns for c in cols):
        return None
    got = [df[c] for c in cols]
    tcol = got[0]
    if tcol.dtype.kind != "M" or getattr(tcol.dtype, "tz", None) is not None:
        return None
    raw = tcol.to_numpy()
    lo, hi = TIME_RANGE
    if not (raw.min() >= lo and raw.max() <= hi):
        return None
    t = raw.astype("datetime64[ns]").view(np.int64)
    ids, order, c = _fast_ids(got[1]) if long else ([""], None, np.zeros(len(t), np.int64))
    if ids is None:
        return None  # mixed ids: the general path reads them as the training did
    tt = t if order is None else t[order]
    same = c[1:] == c[:-1]
    if np.any(same & (np.diff(tt) != step)):
        return None  # a gap, a repeat or an out-of-order row: the general path names it
    if (tt[0] - np.datetime64(meta.anchor, "ns").view(np.int64)) % step or np.any(tt % step != tt[0] % step):
        return None
    values = np.empty((len(df), len(got) - (2 if long else 1)), dtype=np.float32)
    for j, col in enumerate(got[2 if long else 1:]):
        if col.dtype.kind not in "fiu":
            return None
        full = col.to_numpy(dtype=np.float64)
        full = full if order is None else full[order]
        if not np.abs(full).max() <= _F32_MAX:
            return None  # NaN, inf, overflow: the general path refuses and names the rows
        values[:, j] = full
    cuts = np.flatnonzero(~same) + 1
    times = tt.view("datetime64[ns]")
    return SeriesSet(ids=ids, times=np.split(times, cuts) if len(cuts) else [times],
                     values=np.split(values, cuts) if len(cuts) else [values], targets=list(meta.targets),
                     features=list(meta.features), freq=meta.freq, time_col=meta.time_col,
                     id_col=meta.id_col if long else None, layout=meta.layout)


def _fast_ids(icol: pd.Series) -> tuple[list[str] | None, np.ndarray | None, np.ndarray]:
    """A long table's ids: (the distinct ids sorted, the row order that groups them stably, each sorted row's
    series); None ids where the column is not all text (the general path reads it as training did)."""
    from pandas.api.types import is_string_dtype

    raw = icol.to_numpy()
    if not is_string_dtype(icol) or not all(type(v) is str for v in raw):
        return None, None, np.zeros(0, np.int64)
    if len(raw) and (raw == raw[0]).all():  # one series (the per-observation case): nothing to sort
        return [raw[0]], None, np.zeros(len(raw), np.int64)
    uniques, codes = np.unique(raw.astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    return [str(u) for u in uniques], order, codes[order]


def forecast(model: LSTMForecaster, states: CarriedStates, meta: RunMeta, future: Any = None,
             cfg: Any = None) -> pd.DataFrame:
    """The next ``horizon`` steps of every series in ``states`` from its carried state (the states unchanged)."""
    from lstmcast.data.validate import SeriesSet
    from lstmcast.inference.predict import _future_inputs

    T = meta.n_targets
    if not states.ids:
        raise DataError("no carried states yet: run `lstmcast update RUN --data rows.csv` (or Forecaster.update) first")
    seen = states.last_time != _NO_TIME
    if seen.all():  # the usual case: every state has read a row (a slice, not a gather)
        seen = slice(None)
    ids = states.ids[seen] if isinstance(seen, slice) else [s for s, k in zip(states.ids, seen.tolist()) if k]
    last = _from_int(states.last_time[seen], meta)
    C = len(channel_names(meta))
    series = SeriesSet(ids=ids, times=[last[i:i + 1] for i in range(len(ids))],
                       values=[np.zeros((1, C), np.float32)] * len(ids), targets=list(meta.targets),
                       features=list(meta.features), freq=meta.freq, time_col=meta.time_col, id_col=meta.id_col,
                       layout=meta.layout, tz=meta.tz, future_features=list(meta.future_features or []),
                       integer_time=bool(meta.integer_time))
    mean, std = states.mean.numpy()[seen], states.std.numpy()[seen]
    fut_vals, fut_times = _future_inputs(series, meta, future, cfg)
    fut, static, _ = model_inputs(series, meta, last[:, None], fut_vals, fut_times, mean, std)
    out = states.out[seen] if isinstance(seen, slice) else states.out[torch.from_numpy(np.flatnonzero(seen))]
    with torch.inference_mode(), one_thread_for_few(len(ids)):
        raw = model.forecast_from(out, future=None if fut is None else torch.from_numpy(fut),
                                  static=None if static is None else torch.from_numpy(static).float()).numpy()
    iv = meta.intervals or {}
    levels, qs = iv.get("levels") or [], None
    if raw.ndim == 4:
        qs = transform.inverse(calibrated(raw, iv, mean[:, None, :T, None], std[:, None, :T, None]), meta.transform)
        y = qs[..., raw.shape[-1] // 2]
    else:
        y = transform.inverse(raw * std[:, None, :T] + mean[:, None, :T], meta.transform)
    if not np.isfinite(y if qs is None else qs).all():
        bad = [sid or "the series" for sid, v in zip(ids, y) if not np.isfinite(v).all()]
        raise DataError(f"the forecast of {bad[:5]} from the carried state is not finite: check the recent rows")
    return forecast_table(series, meta, y, qs, levels, fut_times)  # the horizon's stamps, as predict passes them
