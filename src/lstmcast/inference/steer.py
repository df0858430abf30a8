"""Backtests a user steers, as Darts' ``historical_forecasts`` and NeuralForecast's ``cross_validation`` allow:
where the first window starts (a time, a row or a fraction of each series), the stride between windows, how
many windows, and whether the model is retrained before each window (refit) or the trained model is reused.

Without ``start`` the windows are today's (backtest.py): the last ``n_windows`` origins of each series' test
split, every ``stride`` steps, anchored at the series' end; with every option at its default this module asks
``run_backtest`` for exactly the backtest of training. With ``start`` the windows go forward from it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.data.windows import split_points
from lstmcast.errors import ConfigError, DataError
from lstmcast.inference.backtest import Backtest, backtest_origins, score
from lstmcast.inference.predict import add_interval_metrics, run_backtest

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig
    from lstmcast.data.validate import SeriesSet
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.run.meta import RunMeta

log = logging.getLogger(__name__)

# what a refit returns: the model that never saw the window, its metadata and its scaler
Fitted = tuple["LSTMForecaster", "RunMeta", dict[str, Any]]


@dataclass(frozen=True)
class Plan:
    """The windows of a steered backtest. ``start``: None (the test split, today's), a float in (0, 1) (that
    fraction of each series' rows), an int (a row position; on integer-time data a time), or a time (text,
    datetime, pandas Timestamp): the first forecast step of the first window. ``stride``: steps between
    windows (default eval.stride, else the horizon). ``n_windows``: at most this many windows a series
    (default eval.max_origins without start, all of them with it). ``refit``: retrain before each window."""

    start: Any = None
    stride: int | None = None
    n_windows: int | None = None
    refit: bool = False

    def check(self) -> None:
        problems = []
        if self.stride is not None and (isinstance(self.stride, bool) or not isinstance(self.stride, int)
                                        or self.stride < 1):
            problems.append(f"stride must be an integer >= 1, got {self.stride!r}")
        if self.n_windows is not None and (isinstance(self.n_windows, bool) or not isinstance(self.n_windows, int)
                                           or self.n_windows < 1):
            problems.append(f"n_windows must be an integer >= 1, got {self.n_windows!r}")
        s = self.start
        if isinstance(s, bool) or (isinstance(s, float) and not 0 < s < 1) or (isinstance(s, int) and s < 0):
            problems.append(f"start={s!r}: give a fraction in (0, 1), a row position >= 0 or a time")
        if problems:
            raise ConfigError("backtest: " + "; ".join(problems))

    @property
    def is_default(self) -> bool:
        return self.start is None and self.stride is None and self.n_windows is None and not self.refit


def parse_start(text: str | None) -> Any:
    """The CLI's --start: ``0.7`` a fraction, ``120`` a row (a time on integer-time data), else a time."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    if math.isfinite(value):
        return value
    raise ConfigError(f"--start {text!r}: give a fraction in (0, 1), a row position or a time")


def _start_rows(start: Any, series: SeriesSet, tz: str | None) -> np.ndarray:
    """(S,) each series' first origin row for ``start`` (may lie before a usable one: clipped by the caller)."""
    lengths = np.array([len(t) for t in series.times], dtype=np.int64)
    if isinstance(start, float):
        return np.floor(start * lengths).astype(np.int64)
    if isinstance(start, (int, np.integer)) and not series.integer_time:
        return np.full(len(lengths), int(start), dtype=np.int64)
    if series.integer_time:
        try:
            when: Any = np.int64(int(start))
        except (TypeError, ValueError):
            raise ConfigError(f"start={str(start)[:40]!r}: this data's time is an integer step; give one, a row "
                              "position or a fraction in (0, 1)") from None
    else:
        import pandas as pd

        try:
            stamp = pd.Timestamp(start)
        except (TypeError, ValueError):
            raise ConfigError(f"start={str(start)[:40]!r} is not a time, a row position or a fraction in (0, 1) "
                              "(e.g. '2023-06-01', 120 or 0.7)") from None
        if stamp.tzinfo is None and tz:
            stamp = stamp.tz_localize(tz)
        if stamp.tzinfo is not None:  # the series' times are UTC-naive
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        when = np.datetime64(stamp.to_datetime64(), "ns")
    return np.array([np.searchsorted(t, when, side="left") for t in series.times], dtype=np.int64)


def plan_pairs(series: SeriesSet, meta: RunMeta, cfg: ForecastConfig, plan: Plan) -> np.ndarray:
    """(P, 2) int64 (series index, origin) pairs of a backtest with ``start``: from each series' start row
    forward every ``stride`` steps, the first ``n_windows``; each usable by the model and both baselines
    (window and season of history, a whole horizon of actuals; drop-windows: no missing value in the span)."""
    L, H, season = meta.window, meta.horizon, meta.season or 1
    w, stride = max(L, season), plan.stride or cfg.eval.stride or H
    first = _start_rows(plan.start, series, meta.tz)
    drop = cfg.data.missing == "drop-windows"
    out = []
    for i, (v, t0) in enumerate(zip(series.values, first.tolist())):
        ts = np.arange(max(t0, w), len(v) - H + 1, stride, dtype=np.int64)
        if drop and len(ts):
            bad = np.concatenate([[0], np.cumsum(~np.isfinite(v).all(axis=1), dtype=np.int64)])
            ts = ts[bad[ts + H] - bad[ts - w] == 0]
        if plan.n_windows is not None:
            ts = ts[:plan.n_windows]
        out.append(np.stack([np.full(len(ts), i, dtype=np.int64), ts], axis=1))
    pairs = np.concatenate(out) if out else np.empty((0, 2), dtype=np.int64)
    if not len(pairs):
        raise DataError(f"no backtest window from start={str(plan.start)[:40]!r}: each needs {w} rows of history "
                        f"before it (window {L}, season {season}) and {H} after it (horizon); start earlier")
    return pairs


def _warn_in_sample(series: SeriesSet, cfg: ForecastConfig, pairs: np.ndarray) -> None:
    d, H = cfg.data, cfg.data.horizon
    val_end = np.array([split_points(len(v), H, d.val_fraction, d.test_fraction, d.min_val_horizons).val_end
                        for v in series.values], dtype=np.int64)
    seen = int((pairs[:, 1] < val_end[pairs[:, 0]]).sum())
    if seen:
        log.warning("%d of %d backtest windows start before the test split: the model trained (or stopped early) "
                    "on those rows, so their scores are optimistic; refit=True retrains before each window",
                    seen, len(pairs))


def steered_backtest(model: LSTMForecaster, series: SeriesSet, meta: RunMeta, scaler: dict[str, Any],
                     cfg: ForecastConfig, plan: Plan,
                     fit: Callable[[SeriesSet, ForecastConfig], Fitted] | None = None,
                     on_window: Callable[[int, int], None] | None = None) -> Backtest:
    """The backtest ``plan`` asks for. Without refit one pass of the trained ``model``; with it, before each
    window a model trained by ``fit`` on every series cut after that window (its test split the window's
    horizon: trained and early-stopped on rows before the window only). ``on_window(k, n)`` reports progress."""
    plan.check()
    if not plan.refit:
        if plan.start is None:  # today's origins, with stride / count overridden: backtest_origins itself
            ev = cfg.eval.model_copy(update={k: v for k, v in (("stride", plan.stride),
                                                               ("max_origins", plan.n_windows)) if v is not None})
            return run_backtest(model, series, meta, scaler, cfg.model_copy(update={"eval": ev}))
        pairs = plan_pairs(series, meta, cfg, plan)
        _warn_in_sample(series, cfg, pairs)
        return run_backtest(model, series, meta, scaler, cfg, pairs)
    if fit is None:
        raise ConfigError("backtest refit=True needs a way to train: call it on a Forecaster")
    pairs = _refit_pairs(model, series, meta, scaler, cfg, plan)
    return _refit_windows(series, meta, cfg, pairs, fit, on_window)


def _refit_pairs(model: LSTMForecaster, series: SeriesSet, meta: RunMeta, scaler: dict[str, Any],
                 cfg: ForecastConfig, plan: Plan) -> np.ndarray:
    if plan.start is not None:
        return plan_pairs(series, meta, cfg, plan)
    ev = cfg.eval.model_copy(update={k: v for k, v in (("stride", plan.stride), ("max_origins", plan.n_windows))
                                     if v is not None})

    d, H, L, season = cfg.data, meta.horizon, meta.window, meta.season or 1
    lengths = [len(v) for v in series.values]
    val_ends = [split_points(n, H, d.val_fraction, d.test_fraction, d.min_val_horizons).val_end for n in lengths]
    finite = [np.isfinite(v).all(axis=1) for v in series.values] if d.missing == "drop-windows" else None
    pairs = backtest_origins(lengths, val_ends, finite, L, H, season, ev.stride or H, ev.max_origins)
    if not len(pairs):
        raise DataError(f"the test split is too short for one backtest window (window {L}, season {season}, "
                        f"horizon {H}): raise data.test_fraction, or give start")
    return pairs


def _window_rank(pairs: np.ndarray) -> np.ndarray:
    """(P,) each pair's window number k within its series (0 = its earliest)."""
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    sidx = pairs[order, 0]
    starts = np.searchsorted(sidx, sidx, side="left")
    rank = np.empty(len(pairs), dtype=np.int64)
    rank[order] = np.arange(len(pairs)) - starts
    return rank


def _cut(series: SeriesSet, keep: np.ndarray, ends: np.ndarray) -> SeriesSet:
    """The series ``keep`` (indices), each cut to its first ``ends`` rows."""
    static = series.static
    if static is not None:
        static = replace(static, ids=[static.ids[i] for i in keep.tolist()], numeric=static.numeric[keep],
                         categorical=static.categorical[keep])
    return replace(series, ids=[series.ids[i] for i in keep.tolist()],
                   times=[series.times[i][:e] for i, e in zip(keep.tolist(), ends.tolist())],
                   values=[series.values[i][:e] for i, e in zip(keep.tolist(), ends.tolist())], static=static)


def _refit_windows(series: SeriesSet, meta: RunMeta, cfg: ForecastConfig, pairs: np.ndarray,
                   fit: Callable[[SeriesSet, ForecastConfig], Fitted],
                   on_window: Callable[[int, int], None] | None) -> Backtest:
    """Window k of every series at once: one training on the series cut after their k-th window."""
    H = meta.horizon
    rank = _window_rank(pairs)
    n_win = int(rank.max()) + 1
    # the window's horizon is the test split (the smallest one: one horizon) and nothing is refitted on it
    wcfg = cfg.model_copy(deep=True)
    wcfg.data.test_fraction, wcfg.data.path, wcfg.train.refit = 1e-9, None, False
    parts: list[Backtest] = []
    for k in range(n_win):
        if on_window is not None:
            on_window(k + 1, n_win)
        sel = pairs[rank == k]
        keep, ends = sel[:, 0], sel[:, 1] + H
        cut = _cut(series, keep, ends)
        model, wmeta, wscaler = fit(cut, wcfg)
        local = np.stack([np.arange(len(keep), dtype=np.int64), sel[:, 1]], axis=1)
        bt = run_backtest(model, cut, wmeta, wscaler, wcfg, local)
        parts.append(replace(bt, series_idx=keep[bt.series_idx]))
    return merge(parts, series.ids, (meta.intervals or {}).get("levels") or [])


def merge(parts: list[Backtest], ids: list[str], levels: list[int]) -> Backtest:
    """One Backtest of several (refit windows): pairs by series then origin, scored over them all."""
    sidx = np.concatenate([p.series_idx for p in parts])
    origins = np.concatenate([p.origins for p in parts])
    order = np.lexsort((origins, sidx))

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays)[order]
    actual, scale = cat([p.actual for p in parts]), cat([p.scale for p in parts])
    forecasts = {m: cat([p.forecasts[m] for p in parts]) for m in parts[0].forecasts}
    quantiles = {m: cat([p.quantiles[m] for p in parts]) for m in parts[0].quantiles}
    metrics = score(actual, forecasts, scale, sidx[order], list(ids))
    for name, q in quantiles.items():
        add_interval_metrics(metrics, name, actual, q, levels, scale, sidx[order], list(ids))
    return Backtest(series_idx=sidx[order], origins=origins[order], actual=actual, forecasts=forecasts,
                    scale=scale, metrics=metrics, quantiles=quantiles)
