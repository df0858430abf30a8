"""Rolling-origin backtest on the test split against naive and seasonal-naive baselines.

At origin t (the first forecast step) every method sees only y[:t]: the model reads the window
[t - L, t), naive repeats y[t - 1], seasonal naive repeats the last observed season.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast import metrics
from lstmcast.data.windows import complete_starts, origins

if TYPE_CHECKING:
    from lstmcast.run.meta import RunMeta
    import pandas as pd

    from lstmcast.data.validate import SeriesSet


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

    def frame(self, series: SeriesSet, meta: RunMeta) -> pd.DataFrame:
        """One row per origin, horizon step and target: what RUN/backtest.csv holds, in original units.

        Columns: series, target, origin (time of the first forecast step), step (1..H), time, actual,
        and one column per method (model, naive, seasonal_naive)."""
        import pandas as pd

        n, H, T = self.actual.shape
        k, h, j = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(H), np.arange(T), indexing="ij"))
        sidx, org = self.series_idx[k], self.origins[k]
        times = [series.times[i][t + s] for i, t, s in zip(sidx, org, h)]
        ids = np.array(series.ids, dtype=object)
        cols: dict[str, Any] = {
            "series": ids[sidx],  # wide data: each target column is a series and its own target
            "target": ids[sidx] if meta.layout == "wide" else np.array(meta.targets[:T], dtype=object)[j],
            "origin": [series.times[i][t] for i, t in zip(sidx, org)], "step": h + 1, "time": times,
            "actual": self.actual[k, h, j]}
        for name, f in self.forecasts.items():
            cols[name] = f[k, h, j]
        out = pd.DataFrame(cols)
        if meta.tz:
            for c in ("origin", "time"):
                out[c] = pd.DatetimeIndex(out[c]).tz_localize("UTC").tz_convert(meta.tz)
        return out


def backtest_origins(lengths: list[int], val_ends: list[int], finite: list[np.ndarray] | None,
                     window: int, horizon: int, season: int, stride: int, max_origins: int):
    """(series index, origin) pairs on each series' test split, usable by the model and both baselines."""
    pairs = []
    for i, (n, lo) in enumerate(zip(lengths, val_ends)):
        ts = origins(lo, n, max(window, season), horizon, stride, max_origins)
        if finite is not None and len(ts):
            span_start = ts - max(window, season)
            ts = complete_starts(span_start, finite[i], max(window, season) + horizon) + max(window, season)
        pairs.extend((i, int(t)) for t in ts)
    return pairs


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
    """The method rows of ``score``'s result (without "per_series")."""
    return {k: v for k, v in scored.items() if k != "per_series"}
