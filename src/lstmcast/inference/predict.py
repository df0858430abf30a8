"""Forecasting and backtesting with a fitted model, in original units (FAULTS.md D13 checks here)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.data import scaling, transform
from lstmcast.data.calendar import future_times as horizon_times
from lstmcast.data.coverage import backtested
from lstmcast.data.future import read_future
from lstmcast.data.inputs import InputSpec, calendar_block, static_table
from lstmcast.data.io import read_table, release_arrow_memory, warnings_as_log
from lstmcast.data.prepare import is_panel, series_splits
from lstmcast.data.validate import SeriesSet, validate_frame
from lstmcast.data.windows import padded_rows
from lstmcast.errors import DataError, did_you_mean, short, short_list
from lstmcast.inference.backtest import Backtest, backtest_origins, gather_pairs, score, series_mase_scales
from lstmcast.inference.fastpath import one_thread_for_few
from lstmcast.inference.frames import forecast_table
from lstmcast.model.quantiles import calibrated, interval_metrics, quantiles_for, seasonal_naive_offsets_many
from lstmcast.model.theta import HISTORY_CAP, local_shift

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.config import ForecastConfig
    from lstmcast.data.validate import SeriesSet
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.run.meta import RunMeta


def load_new_series(source: Any, cfg: ForecastConfig, meta: RunMeta) -> SeriesSet:
    """Read new data for a trained model, check it against the model (D13) and validate it.

    ``None`` reads the run's training data (``data.path``). Errors say what the model needs.
    """
    if isinstance(source, SeriesSet):
        series = source
    else:
        source = cfg.data.path if source is None else source
        if source is None:
            raise DataError("no data given: pass a CSV/Parquet path or a DataFrame with the training columns")
        with warnings_as_log("the new data"):
            table = read_table(source, cfg.data.delimiter, cfg.data.id_col, cfg.data.decimal)
            check_new_table(table, meta, cfg.data.missing)
            try:
                series = validate_frame(table, cfg.data, cfg.train.precision)
            except DataError as exc:
                raise DataError(f"new data for the trained model: {exc} (predict and evaluate apply the run's "
                                f"data settings, e.g. data.missing={cfg.data.missing!r})") from None
        del table
        release_arrow_memory()  # the read table is gone: return its Arrow pages
    check_compatible(series, meta)
    return series


def _needed_columns(meta: RunMeta) -> list[tuple[str, str]]:
    roles = [(meta.time_col, "time")]
    if meta.layout == "long":
        roles.append((meta.id_col, "series id"))
    roles += [(t, "target") for t in meta.targets] + [(f, "feature") for f in meta.features]
    roles += [(f, "future feature") for f in meta.future_features or []]
    return roles


def check_new_table(table: pd.DataFrame, meta: RunMeta, missing: str) -> None:
    """Before validation: the new table has the training columns and enough rows per series (D13)."""
    cols = [c for c in table.columns if c != "__row__"]
    roles = _needed_columns(meta)
    lacking = [f"{role} column {short(name)}{did_you_mean(name, cols)}" for name, role in roles if name not in cols]
    if lacking:
        need = ", ".join(f"{short(name)} ({role})" for name, role in roles)
        raise DataError(f"new data lacks columns the model was trained on: {'; '.join(lacking)}. It needs the "
                        f"columns {need}; columns present: {short_list(cols)}")
    L = 1 if meta.mask_channel else meta.window  # a model with a mask channel forecasts from a padded window
    # without a fill policy no rows can be inserted, so the raw count is final; with one, check_compatible
    # counts after gap filling and this only catches what validation could not handle at all
    need_rows = L if missing == "error" else min(L, 3)
    counts = table.groupby(meta.id_col).size() if meta.layout == "long" else {"": len(table)}
    if meta.layout == "long":
        counts = counts[counts < need_rows]  # only the short ones go through Python
    too_short = [(sid, int(n)) for sid, n in dict(counts).items() if n < need_rows]
    if too_short:
        shown = ", ".join(f"{'series ' + short(str(sid)) if sid != '' else 'the series'} has {n}"
                          for sid, n in too_short[:5])
        raise DataError(f"new data is too short: {shown} rows, but forecasting needs the last window = {L} "
                        f"contiguous rows of each series (the model's data.window): give at least {L} recent rows")


def check_compatible(series: SeriesSet, meta: RunMeta) -> None:
    """New data must have the training columns, frequency, series and grid (D13)."""
    problems = []
    if series.targets != meta.targets or series.features != meta.features:
        problems.append(f"columns differ from training: targets [{short_list(series.targets)}] / features "
                        f"[{short_list(series.features)}], the model was trained on targets "
                        f"[{short_list(meta.targets)}] / features [{short_list(meta.features)}]")
    if series.layout != meta.layout:
        problems.append(f"layout is {series.layout!r} but the model was trained on {meta.layout!r} data")
    if series.freq != meta.freq:
        problems.append(f"frequency is {series.freq!r} but the model was trained on {meta.freq!r}: "
                        "resample the new data to the training frequency")
    if list(series.future_features) != list(meta.future_features or []):
        problems.append(f"future features {series.future_features} differ from the model's "
                        f"{meta.future_features or []}")
    need = 1 if meta.mask_channel else meta.window  # a mask channel: short series are forecast from padded windows
    too_short = [(sid, len(v)) for sid, v in zip(series.ids, series.values) if len(v) < need]
    for sid, n in too_short:
        label = f"series {short(sid)}" if sid else "the series"
        problems.append(f"{label} has {n} rows; forecasting needs the last window = {meta.window} rows")
    if bool(series.tz) != bool(meta.tz):
        problems.append(f"timestamps are {'in time zone ' + repr(series.tz) if series.tz else 'naive (no zone)'} "
                        f"but the training timestamps were {'in ' + repr(meta.tz) if meta.tz else 'naive'}"
                        ": give the new timestamps the same kind of zone information")
    if not problems and not _on_training_grid(series, meta):
        import pandas as pd

        problems.append(f"timestamps are not on the training grid ({meta.freq!r} steps from "
                        f"{pd.Timestamp(meta.anchor)}): the new data must continue the training series' "
                        "time grid (same step and phase)")
    if problems:
        raise DataError("new data does not match the trained model: " + "; ".join(problems))


def _on_training_grid(series: SeriesSet, meta: RunMeta) -> bool:
    import pandas as pd

    if meta.integer_time:  # integer steps: every last step a whole number of steps from the anchor
        if not series.integer_time:
            return False
        lasts = np.array([t[-1] for t in series.times], dtype=np.int64)
        return bool(((lasts - int(meta.anchor)) % int(meta.freq) == 0).all())
    offset = pd.tseries.frequencies.to_offset(meta.freq)
    anchor = pd.Timestamp(meta.anchor)
    # series mostly end on the same few stamps: check each distinct last stamp once
    for last in np.unique(np.array([t[-1] for t in series.times], dtype="datetime64[ns]")):
        last = pd.Timestamp(last)
        if meta.tz and not isinstance(offset, pd.offsets.Tick):  # calendar days in the zone (H13)
            last = last.tz_localize("UTC").tz_convert(meta.tz).tz_localize(None)
        if isinstance(offset, pd.offsets.Tick):
            if (last - anchor) % pd.Timedelta(offset) != pd.Timedelta(0):
                return False
        elif not offset.is_on_offset(last):
            return False
    return True


def _scaler_rows(series: SeriesSet, meta: RunMeta) -> list[int]:
    """Each series' row in scaler.json; -1 for a series the model never saw (a new series)."""
    if series.layout == "single":
        return [0] * len(series.ids)
    pos = {s: i for i, s in enumerate(meta.ids)}  # list.index per series was quadratic in the series
    return [pos.get(s, -1) for s in series.ids]


def series_scalers(series: SeriesSet, meta: RunMeta, scaler: dict[str, np.ndarray],
                   upto: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(S, C) means and stds: the trained series' own; a new series' from its own rows (the first
    ``upto[i]`` of them when given: the training split in a backtest), as training fitted them."""
    rows = np.array(_scaler_rows(series, meta), dtype=np.int64)
    if series.layout == "single":  # the series trained on: nothing new to fit (a one-series predict's hot path)
        return scaler["mean"][rows], scaler["std"][rows]
    mean, std = scaler["mean"][rows].copy(), scaler["std"][rows].copy()
    new = np.flatnonzero(rows < 0)
    if len(new):
        vals = [transform.forward(series.values[i], meta.n_targets, meta.transform) for i in new.tolist()]
        ends = [upto[i] if upto is not None else len(series.values[i]) for i in new.tolist()]
        mean[new], std[new], flat = scaling.fit_scalers(vals, ends)
        if meta.scaling == "diff":  # as training scaled its series (data/prepare.py scaling_how)
            T = meta.n_targets
            std[new, :T] = scaling.diff_scales(vals, ends, meta.season, T, mean[new, :T], std[new, :T])
        if is_panel(meta.layout, len(meta.ids)):  # as training: too short to measure a spread, borrow the table's
            weak = np.zeros(len(rows), dtype=bool)
            weak[new[[k for k, e in enumerate(ends) if e < scaling.MIN_SPREAD_POINTS] + [k for k, _ in flat]]] = True
            known = rows >= 0
            std[weak] = scaling.borrow_spread(mean[known | weak], std[known | weak], weak[known | weak],
                                              meta.transform == "none")[weak[known | weak]]
    if len(new):
        logging.getLogger(__name__).info("%d series the model never saw (e.g. %r): scaled from their own rows",
                                         len(new), series.ids[new[0]])
    return mean, std


def model_inputs(series: SeriesSet, meta: RunMeta, times: np.ndarray, future_vals: np.ndarray | None,
                 future_times_: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 sidx: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """The known-future (N, H, K) and static (N, S) inputs, and the past calendar block (N, L, 2C), for windows
    of the series ``sidx`` (default: one per series) whose past times are ``times`` (N, L) and horizon times
    ``future_times_`` (N, H); ``future_vals`` (N, H, Kf) raw known-future covariates."""
    spec = InputSpec.from_dict(meta.inputs_dict())
    sidx = np.arange(len(series.ids)) if sidx is None else sidx
    tz = meta.tz
    past_cal, future_cal = _calendars(spec, times, future_times_ if spec.future_size else None, tz)
    future = None
    if spec.future_size:
        parts = []
        if spec.future_features:
            kf = len(spec.future_features)
            parts.append(scaling.transform(future_vals, mean[sidx][:, None, -kf:], std[sidx][:, None, -kf:]))
        parts.append(future_cal)
        future = np.concatenate(parts, axis=2).astype(np.float32)
    table = static_table(spec, series.static, series.ids)
    static = table[sidx] if table is not None else None
    return future, static, past_cal


# past and horizon stamps up to this many get their calendar channels in one call: for one series the numpy
# calls' fixed cost is most of the work, for a backtest's many windows a joined copy would only add memory
_ONE_CALL = 1 << 16


def _calendars(spec: Any, times: np.ndarray, future_times_: np.ndarray | None,
               tz: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The calendar channels of the past (N, L) and horizon (N, H) times (None: no horizon inputs)."""
    if future_times_ is None:
        return _calendar(spec, times, tz), None
    if spec.calendar and times.size + future_times_.size <= _ONE_CALL:
        both = _calendar(spec, np.concatenate([times, future_times_], axis=1), tz)  # (N, L + H, 2C)
        return both[:, :times.shape[1]], both[:, times.shape[1]:]
    return _calendar(spec, times, tz), _calendar(spec, future_times_, tz)


def _calendar(spec: Any, times: np.ndarray, tz: str | None) -> np.ndarray:
    """(N, K) times -> (N, K, 2C) calendar channels in one call (the channels are per time stamp)."""
    block = calendar_block(spec, times.reshape(-1), tz)
    return block.reshape(times.shape[0], times.shape[1], block.shape[1])


# windows per forward at predict and backtest: an LSTM's gates for 4,096 windows (hidden 64, 2 layers) took
# 60-117 MB more at the peak of a 20k-series run than 1,024, which was no slower (docs/FAULTS.md R18)
PREDICT_BATCH = 1024


def _predict_scaled(model: LSTMForecaster, x: np.ndarray, batch: int = PREDICT_BATCH,
                    future: np.ndarray | None = None, static: np.ndarray | None = None) -> np.ndarray:
    import torch

    def part(a: np.ndarray | None, i: int) -> Any:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a[i:i + batch], dtype=np.float32))
    out = []
    with torch.inference_mode(), one_thread_for_few(len(x)):
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i:i + batch])
            out.append((model(xb, future=part(future, i), static=part(static, i)) if future is not None or
                        static is not None else model(xb)).numpy())
    return np.concatenate(out) if len(out) > 1 else out[0]


def forecast_frame(model: LSTMForecaster, series: SeriesSet, meta: RunMeta,
                   scaler: dict[str, np.ndarray], future: Any = None, cfg: Any = None) -> pd.DataFrame:
    """The next ``horizon`` steps of every series; ``future``: the known-future covariates over them."""
    L, T = meta.window, meta.n_targets
    mean, std = series_scalers(series, meta, scaler)  # (S, C)
    x, past_times, mask = last_windows(series, L, meta.mask_channel)  # (S, L, C), (S, L), (S, L) or None
    if np.isnan(x).any():
        bad = [sid or "the series" for sid, v in zip(series.ids, x) if np.isnan(v).any()]
        raise DataError(f"the last {L} rows of {bad[:5]} contain missing values: fill them (data.missing: "
                        "interpolate or ffill) to forecast")
    x_raw = x
    transform.check_positive(series.ids, list(x), T, meta.transform)
    x = scaling.transform(transform.forward(x, T, meta.transform), mean[:, None, :], std[:, None, :])  # (S, L, C)
    if not np.isfinite(x).all():  # D14: no inf into the model (it would forecast NaN without a word)
        for i, sid in enumerate(series.ids):
            scaling.check_overflow(x_raw[i], x[i], series.channel_names, past_times[i],
                                   f"series {short(sid)}" if sid else "the series")
    fut_vals, fut_times = _future_inputs(series, meta, future, cfg)
    fut, static, cal = model_inputs(series, meta, past_times, fut_vals, fut_times, mean, std)
    x = insert_mask(x, mask, series.n_past_only)
    x = np.concatenate([x, cal], axis=2) if cal.shape[2] else x
    raw = _predict_scaled(model, x, future=fut, static=static)  # (S, H, T), or (S, H, T, Q) with quantiles
    raw = with_local(raw, meta, series.values, mean[:, None, :T], std[:, None, :T])
    iv = meta.intervals or {}
    levels, qs = iv.get("levels") or [], None
    if raw.ndim == 4:  # the calibrated quantiles; the median is the point forecast
        qs = transform.inverse(calibrated(raw, iv, mean[:, None, :T, None], std[:, None, :T, None]),
                               meta.transform)  # (S, H, T, Q)
        y = qs[..., raw.shape[-1] // 2]
    else:
        y = transform.inverse(raw * std[:, None, :T] + mean[:, None, :T], meta.transform)  # (S, H, T)
    # D14: a NaN forecast written as an empty cell would pass as a result
    if not np.isfinite(y if qs is None else qs).all():
        bad = [sid or "the series" for sid, v in zip(series.ids, y) if not np.isfinite(v).all()]
        raise DataError(f"the forecast of {bad[:5]} is not finite: the last {L} input rows lie so far outside "
                        "the training data's range that the model overflows; check those values")
    return forecast_table(series, meta, y, qs, levels, fut_times)


def with_local(raw: np.ndarray, meta: RunMeta, histories: list[np.ndarray], mean: np.ndarray, std: np.ndarray
               ) -> np.ndarray:
    """The model's scaled forecasts ``raw`` (n, H, T) or (n, H, T, Q), each series' Theta forecast of its
    ``histories`` (n_i, C) combined in (meta.json ``local``, lstmcast.model.theta): every quantile moves with the
    point forecast. ``mean``, ``std`` (n, 1, T): the series' scalers. ``raw`` itself without a combination."""
    if meta.local is None or meta.local.weight == 0:
        return raw
    T = meta.n_targets
    point = (raw[..., raw.shape[-1] // 2] if raw.ndim == 4 else raw) * std + mean  # the model's units
    hist = [transform.forward(h[-HISTORY_CAP:, :T].astype(np.float64), T, meta.transform) for h in histories]
    shift = local_shift(point, hist, meta.local, meta.season) / std
    return (raw + (shift[..., None] if raw.ndim == 4 else shift)).astype(raw.dtype)


def last_windows(series: SeriesSet, window: int, padded: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each series' last ``window`` rows (S, L, C) and times (S, L); ``padded`` (a model with a mask channel):
    a shorter series' window is left-padded with its first row, as in training, and the mask (S, L) says which
    rows are real (None without padding)."""
    if not padded:
        return (np.stack([v[-window:] for v in series.values]), np.stack([t[-window:] for t in series.times]),
                None)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in series.values])]).astype(np.int64)
    idx, mask = padded_rows(offsets[1:], offsets[:-1], window)
    return np.concatenate(series.values)[idx], np.concatenate(series.times)[idx], mask


def insert_mask(x: np.ndarray, mask: np.ndarray | None, at: int) -> np.ndarray:
    """(N, L, C) -> (N, L, C + 1): the mask channel at column ``at`` (after the past-only channels); unchanged
    without a mask."""
    if mask is None:
        return x
    return np.concatenate([x[:, :, :at], mask[:, :, None].astype(x.dtype), x[:, :, at:]], axis=2)


def _future_inputs(series: SeriesSet, meta: RunMeta, future: Any, cfg: Any) -> tuple[Any, np.ndarray]:
    """The raw known-future covariates (S, H, Kf) from ``future`` and each series' horizon times (S, H),
    UTC-naive. Series that end at the same time share theirs: computed once per distinct last time (a
    ``date_range`` per series was 15x the model's forward at 10k series)."""
    H, integer = meta.horizon, bool(meta.integer_time)
    if len(series.times) == 1:  # one series (a quarter of this function's time went to np.unique)
        times = horizon_times(series.times[0][-1], meta.freq, H, integer_time=integer, tz=meta.tz)[None]
    else:
        uniq, inv = np.unique(np.array([t[-1] for t in series.times]), return_inverse=True)
        times = np.stack([horizon_times(u, meta.freq, H, integer_time=integer, tz=meta.tz) for u in uniq])[inv]
    if not meta.future_features:
        if future is not None:
            raise DataError("future= was given but this model has no known-future covariates (data.future_features)"
                            ": drop --future / future=")
        return None, times

    with warnings_as_log("the future covariates"):
        vals = read_future(future, cfg.data, series.ids, [t[-1] for t in series.times], H, meta.freq, integer,
                           meta.tz)
    return vals, times


def run_backtest(model: LSTMForecaster, series: SeriesSet, meta: RunMeta, scaler: dict[str, np.ndarray],
                 cfg: ForecastConfig, pairs: np.ndarray | None = None) -> Backtest:
    """Every (series, origin) pair at once: rows gathered from the concatenated series by fancy indexing
    (a Python loop over 400k pairs took 511 s at 100k series); equal to the per-pair slices. ``pairs``:
    (P, 2) (series index, origin) chosen by the caller (inference/steer.py); None: the test split's origins."""
    L, H, T = meta.window, meta.horizon, meta.n_targets
    season = meta.season or 1
    d = cfg.data
    lengths = np.array([len(v) for v in series.values], dtype=np.int64)
    transform.check_positive(series.ids, series.values, T, meta.transform)
    panel = is_panel(meta.layout, len(meta.ids))  # as the model was trained, whatever the new data holds
    splits = series_splits(lengths.tolist(), d, panel)
    train_end = np.array([sp.train_end for sp in splits], dtype=np.int64)
    mean_s, std_s = series_scalers(series, meta, scaler, train_end.tolist())
    finite = [np.isfinite(v).all(axis=1) for v in series.values] if d.missing == "drop-windows" else None
    padded = meta.mask_channel  # the model reads padded windows: an origin needs only a season of history
    if pairs is None:
        pairs = backtest_origins(lengths, [s.val_end for s in splits], finite, 1 if padded else L, H, season,
                                 cfg.eval.stride or H, cfg.eval.max_origins)
    if not len(pairs):
        need = max(L, season) + H
        raise DataError(f"the test split is too short for one backtest origin: each needs {need} points of "
                        f"history + horizon (window {L}, season {season}, horizon {H}); raise "
                        "data.test_fraction or use more data")
    sidx, ts = pairs[:, 0], pairs[:, 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(series.values)  # (sum N_i, C)
    rows = offsets[sidx] + ts  # each origin's row in flat
    past_idx, mask = padded_rows(rows, offsets[sidx], L) if padded else (rows[:, None] + np.arange(-L, 0), None)
    g = gather_pairs(flat, rows, L, H, T, season, past_idx)
    kf = len(meta.future_features or [])
    times = np.concatenate(series.times)
    fut, static, cal = model_inputs(series, meta, times[past_idx], g.ahead[:, :, flat.shape[1] - kf:],
                                    times[rows[:, None] + np.arange(H)], mean_s, std_s, sidx)
    del times
    past = transform.forward(g.past, T, meta.transform)
    xs = scaling.transform(past, mean_s[sidx][:, None, :], std_s[sidx][:, None, :])  # (P, L, C) float32
    xs = insert_mask(xs, mask, series.n_past_only)
    if getattr(cfg.model, "stateful", False):  # hook (issue 24): each origin from the carried state, one pass
        from lstmcast.inference.carry import origin_forecasts

        raw = origin_forecasts(model, series, meta, mean_s, std_s, sidx, ts, fut)
    else:
        raw = _predict_scaled(model, np.concatenate([xs, cal], axis=2) if cal.shape[2] else xs, future=fut,
                              static=static)
    mean_j, std_j = mean_s[sidx][:, None, :T], std_s[sidx][:, None, :T]
    raw = with_local(raw, meta, [series.values[i][:t] for i, t in zip(sidx.tolist(), ts.tolist())], mean_j, std_j)
    qpred = transform.inverse(calibrated(raw, meta.intervals, mean_j[..., None], std_j[..., None]), meta.transform) \
        if raw.ndim == 4 else None
    pred = qpred[..., raw.shape[-1] // 2] if qpred is not None else \
        transform.inverse(scaling.inverse(raw, mean_j, std_j), meta.transform)
    forecasts = {"model": pred, "naive": g.naive, "seasonal_naive": g.seasonal_naive}
    actual_arr = g.ahead[:, :, :T].astype(np.float64)
    present, where = np.unique(sidx, return_inverse=True)
    history = np.clip(np.where(train_end < 0, lengths + train_end, train_end), 0, lengths)  # len(y[:train_end])
    scale_arr = series_mase_scales(flat, offsets[present], history[present], T, season)[where][:, None, :]
    del flat, g
    metrics = score(actual_arr, forecasts, scale_arr, sidx, series.ids)
    quantile_fc = {}
    if qpred is not None:  # interval scores for the model and for seasonal naive's own residual intervals
        levels = meta.intervals["levels"]
        snq = seasonal_naive_quantiles(series, splits, sidx, forecasts["seasonal_naive"], H, T, season, levels)
        quantile_fc = {"model": qpred, "seasonal_naive": snq}
        for name, q in quantile_fc.items():
            add_interval_metrics(metrics, name, actual_arr, q, levels, scale_arr, sidx, series.ids)
    covered = backtested(series.ids, splits, sidx, season if padded else max(L, season)) \
        if panel else {}
    return Backtest(series_idx=sidx, origins=ts, actual=actual_arr, forecasts=forecasts,
                    scale=scale_arr, metrics=metrics, quantiles=quantile_fc, covered=covered)


def add_interval_metrics(metrics: dict[str, Any], name: str, actual: np.ndarray, q: np.ndarray, levels: list[int],
                          scale: np.ndarray, sidx: np.ndarray, ids: list[str]) -> None:
    """Interval scores into ``metrics[name]``; with several series per series too, the method's row the mean
    over the series (each series counts once, as for MASE)."""
    per = metrics.get("per_series")
    if per is None:
        metrics[name].update(interval_metrics(actual, q, levels, scale))
        return
    rows = []
    order = np.argsort(sidx, kind="stable")  # each series' rows as one slice: a mask per series was quadratic
    present, starts = np.unique(sidx[order], return_index=True)
    for i, a, b in zip(present.tolist(), starts.tolist(), [*starts[1:].tolist(), len(order)]):
        m = order[a:b]
        rows.append(interval_metrics(actual[m], q[m], levels, scale[m]))
        per[str(ids[i])][name].update(rows[-1])
    metrics[name].update({k: float(np.mean([r[k] for r in rows])) for k in rows[0]})


def seasonal_naive_quantiles(series: SeriesSet, splits: list[Any], sidx: np.ndarray, point: np.ndarray, H: int,
                             T: int, season: int, levels: list[int]) -> np.ndarray:
    """(n, H, T, Q): seasonal naive plus the quantiles of its in-sample errors on each series' training part."""
    qs = quantiles_for(levels)
    present, where = np.unique(sidx, return_inverse=True)
    offsets = seasonal_naive_offsets_many([series.values[i][:splits[i].train_end, :T].astype(np.float64)
                                           for i in present.tolist()], H, season, qs)
    return point[..., None] + offsets[where]
