"""Rolling-origin backtest on the test split against naive and seasonal-naive baselines.

At origin t (the first forecast step) every method sees only y[:t]: the model reads the window
[t - L, t), naive repeats y[t - 1], seasonal naive repeats the last observed season.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from lstmcast import metrics
from lstmcast.model.quantiles import interval_columns

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.data.validate import SeriesSet
    from lstmcast.run.meta import RunMeta


def naive(y: np.ndarray, t: int, horizon: int) -> np.ndarray:
    """(H, T): the last observed value, repeated."""
    return np.repeat(y[t - 1:t], horizon, axis=0)


def seasonal_naive(y: np.ndarray, t: int, horizon: int, season: int) -> np.ndarray:
    """(H, T): step h repeats y[t + h - m * (h // m + 1)], the same phase of the last observed season."""
    h = np.arange(horizon)
    return y[t + h - season * (h // season + 1)]


@dataclass
class Backtest:
    series_idx: np.ndarray  # (n,) which series each origin belongs to
    origins: np.ndarray  # (n,) origin t within its series
    actual: np.ndarray  # (n, H, T) original units
    forecasts: dict[str, np.ndarray]  # method -> (n, H, T)
    scale: np.ndarray  # (n, 1, T) MASE scale of each origin's series
    metrics: dict[str, Any]  # method -> {metric: value}; with several series also "per_series" (see score)
    # model.levels set: method -> (n, H, T, Q) ascending quantiles, original units (model, seasonal_naive)
    quantiles: dict[str, np.ndarray] = field(default_factory=dict)
    # a table of several series: data.coverage.backtested (how many series have an origin, which not and why)
    covered: dict[str, Any] = field(default_factory=dict)

    def frame(self, series: SeriesSet, meta: RunMeta) -> pd.DataFrame:
        """One row per origin, horizon step and target: what RUN/backtest.csv holds, in original units.

        Columns: series, target, cutoff (time of the last observed row), origin (time of the first forecast
        step), step (1..H), time, actual, one column per method (model, naive, seasonal_naive) and, with
        model.levels, ``<method>_lo_<L>`` / ``<method>_hi_<L>`` per level for the methods with intervals."""
        return next(self.frames(series, meta, rows=None))

    def frames(self, series: SeriesSet, meta: RunMeta, rows: int | None = 100_000) -> Iterator[pd.DataFrame]:
        """``frame`` in consecutive parts of about ``rows`` rows (None: one part), so RUN/backtest.csv is
        written part by part: the whole frame was 1.1M rows at 20k series (docs/FAULTS.md R18)."""
        n, H, T = self.actual.shape
        flat = np.concatenate(series.times)  # one lookup for every row: a Python loop per row cost seconds
        starts = np.concatenate([[0], np.cumsum([len(t) for t in series.times])])
        ids = np.array(series.ids, dtype=object)
        step = n if rows is None else max(1, rows // (H * T))
        for k0 in range(0, max(n, 1), max(step, 1)):
            yield self._part(np.arange(k0, min(n, k0 + step)), flat, starts, ids, meta)

    def _part(self, origins: np.ndarray, flat: np.ndarray, starts: np.ndarray, ids: np.ndarray,
              meta: RunMeta) -> pd.DataFrame:
        import pandas as pd

        _, H, T = self.actual.shape
        k, h, j = (a.ravel() for a in np.meshgrid(origins, np.arange(H), np.arange(T), indexing="ij"))
        sidx, org = self.series_idx[k], self.origins[k]
        row = starts[sidx] + org
        cols: dict[str, Any] = {
            "series": ids[sidx],  # wide data: each target column is a series and its own target
            "target": ids[sidx] if meta.layout == "wide" else np.array(meta.targets[:T], dtype=object)[j],
            "cutoff": flat[row - 1], "origin": flat[row], "step": h + 1, "time": flat[row + h],
            "actual": self.actual[k, h, j]}
        for name, f in self.forecasts.items():
            cols[name] = f[k, h, j]
        levels = (meta.intervals or {}).get("levels") or []
        for name, q in self.quantiles.items():  # (n, H, T, Q) -> one row per (origin, step, target)
            cols.update(interval_columns(name, q[k, h, j], levels))
        out = pd.DataFrame(cols)
        if meta.tz:
            for c in ("cutoff", "origin", "time"):
                out[c] = pd.DatetimeIndex(out[c]).tz_localize("UTC").tz_convert(meta.tz)
        return out


def backtest_origins(lengths: list[int], val_ends: list[int], finite: list[np.ndarray] | None,
                     window: int, horizon: int, season: int, stride: int, max_origins: int) -> np.ndarray:
    """(P, 2) int64 (series index, origin) pairs on each series' test split, usable by the model and both
    baselines, by series then origin: ``windows.origins`` of every series at once (a loop per series
    cost seconds at 100k series)."""
    w = max(window, season)
    n, lo = np.asarray(lengths, dtype=np.int64), np.asarray(val_ends, dtype=np.int64)
    first, last = np.maximum(lo, w), n - horizon
    k = np.where(last >= first, np.minimum(max_origins, (last - first) // stride + 1), 0)  # origins a series
    sidx = np.repeat(np.arange(len(n), dtype=np.int64), k)
    j = np.arange(len(sidx), dtype=np.int64) - np.repeat(np.cumsum(k) - k, k)  # 0..k_i-1 within each series
    ts = last[sidx] - stride * (k[sidx] - 1 - j)
    if finite is not None and len(ts):  # missing: drop-windows: the whole span [t - w, t + H) finite
        bad = np.concatenate([[0], np.cumsum(~np.concatenate(finite), dtype=np.int64)])
        start = np.concatenate([[0], np.cumsum(n)])[sidx] + ts - w
        ok = bad[start + w + horizon] - bad[start] == 0
        sidx, ts = sidx[ok], ts[ok]
    return np.stack([sidx, ts], axis=1)


class PairRows(NamedTuple):
    past: np.ndarray  # (P, L, C) raw input window before each origin
    ahead: np.ndarray  # (P, H, C) raw rows from the origin: actuals and the true known-future values
    naive: np.ndarray  # (P, H, T) float64
    seasonal_naive: np.ndarray  # (P, H, T) float64


def gather_pairs(values: np.ndarray, rows: np.ndarray, window: int, horizon: int, n_targets: int,
                 season: int, past_rows: np.ndarray | None = None) -> PairRows:
    """Every origin's rows at once from the concatenated series ``values`` (N, C); ``rows`` (P,) is each
    origin's row in it. Equal to ``naive`` / ``seasonal_naive`` and the slices of each series, origin by origin.
    ``past_rows`` (P, L): the input rows when they are not the ``window`` rows before each origin (left-padded
    windows of short series: windows.padded_rows)."""
    h = np.arange(horizon)
    T = n_targets
    past = values[rows[:, None] + np.arange(-window, 0) if past_rows is None else past_rows]  # (P, L, C)
    ahead = values[rows[:, None] + h]  # (P, H, C)
    last = values[rows - 1, :T].astype(np.float64)[:, None, :]  # (P, 1, T)
    snv = values[rows[:, None] + (h - season * (h // season + 1)), :T].astype(np.float64)  # (P, H, T)
    return PairRows(past, ahead, np.repeat(last, horizon, axis=1), snv)


def series_mase_scales(values: np.ndarray, offsets: np.ndarray, history: np.ndarray, n_targets: int,
                       season: int, chunk_rows: int = 1 << 20) -> np.ndarray:
    """(S, T): ``metrics.mase_scale`` of rows [offsets[i], offsets[i] + history[i]) of ``values`` (N, C),
    float64, equal to it bit for bit: series with the same history length go through one (G, n, T) nanmean,
    whose reduction order is the single series' (a segmented sum over the flat rows is not, for T > 1)."""
    out = np.empty((len(offsets), n_targets))
    order = np.argsort(history, kind="stable")
    lengths, starts = np.unique(history[order], return_index=True)
    for n, a, b in zip(lengths.tolist(), starts.tolist(), [*starts[1:].tolist(), len(order)]):
        m = season if n > season else 1
        step = max(1, chunk_rows // max(n, 1))  # bounded scratch: (G, n, T) float64 and its differences;
        # 4M rows a chunk (~100 MB of temporaries) were the peak of a 20k-series train (docs/FAULTS.md R18)
        for c in range(a, b, step):
            g = order[c:min(b, c + step)]
            y = values[offsets[g][:, None] + np.arange(n), :n_targets].astype(np.float64)  # (G, n, T)
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN history: scale 1, as below
                scale = np.nanmean(np.abs(y[:, m:] - y[:, :-m]), axis=1)
            out[g] = np.where(scale > 0, scale, 1.0)
    return out


def score(actual: np.ndarray, forecasts: dict[str, np.ndarray], scale: np.ndarray,
          series_idx: np.ndarray | None = None, ids: list[str] | None = None) -> dict[str, Any]:
    """Metrics per method. One series: MAE, RMSE, sMAPE, MASE over all its origins. Several series (H16):
    sMAPE and MASE are the means of the per-series values (scale-free, each series counts once); MAE and
    RMSE mix the series' units, so they are kept only as MAE_pooled / RMSE_pooled; every series' own
    metrics are under "per_series" (series id -> method -> metrics)."""
    if series_idx is None or ids is None or len(np.unique(series_idx)) <= 1:
        return {name: metrics.all_metrics(actual, f, scale) for name, f in forecasts.items()}
    present = np.unique(series_idx)
    groups = np.searchsorted(present, series_idx)
    scores = {name: metrics.grouped_metrics(actual, f, scale, groups, len(present)) for name, f in forecasts.items()}
    lists = {name: {k: v.tolist() for k, v in s.items()} for name, s in scores.items()}  # Python floats, fast
    per = {str(ids[i]): {name: {k: v[g] for k, v in s.items()} for name, s in lists.items()}
           for g, i in enumerate(present.tolist())}
    out: dict[str, Any] = {}
    for name, f in forecasts.items():
        out[name] = {"MAE_pooled": metrics.mae(actual, f), "RMSE_pooled": metrics.rmse(actual, f),
                     **{k: float(np.mean(scores[name][k])) for k in metrics.SCALE_FREE}}
    out["per_series"] = per
    return out


def methods(scored: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The method rows of ``score``'s result (without "per_series" and the table's "series" counts)."""
    return {k: v for k, v in scored.items() if k not in ("per_series", "series")}
