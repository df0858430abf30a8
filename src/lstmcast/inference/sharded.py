"""``data.shard_series`` after training: each rank backtests and forecasts its own series; rank 0 merges them
in the global series order (meta.ids) and scores the backtest over all of them with ``backtest.score``, as one
process scores its series, so metrics.json, forecast.csv and backtest.csv hold every series."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.inference.backtest import Backtest, score

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.training.world import World


def outputs(fc: Any) -> tuple[Backtest, pd.DataFrame | None, pd.DataFrame] | None:
    """This rank's backtest and forecast, gathered on rank 0: (the backtest of every series, its metrics
    scored over them all; the forecast; backtest.csv's rows) there, None on the others. ``fc.backtest_`` stays
    this rank's own (its series are the ones this process holds)."""
    world: World = fc.training_.world
    fc.backtest(None)
    bt, meta = fc.backtest_, fc.meta_
    src = fc.series(None)
    pos = {sid: i for i, sid in enumerate(meta.ids)}
    part = {"sidx": np.array([pos[s] for s in src.ids], dtype=np.int64)[bt.series_idx], "actual": bt.actual,
            "forecasts": bt.forecasts, "scale": bt.scale, "origins": bt.origins, "rows": bt.frame(src, meta),
            "forecast": None if meta.future_features else fc.predict(None)}
    parts = world.gather_to_main(part)
    if parts is None:
        return None
    return _merge(parts, meta)


def _merge(parts: list[dict[str, Any]], meta: Any) -> tuple[Backtest, pd.DataFrame | None, pd.DataFrame]:
    import pandas as pd

    sidx = np.concatenate([p["sidx"] for p in parts])
    order = np.argsort(sidx, kind="stable")  # by series, each series' origins in their order: one process's
    cat = {k: np.concatenate([p[k] for p in parts])[order] for k in ("actual", "scale", "origins")}
    forecasts = {m: np.concatenate([p["forecasts"][m] for p in parts])[order] for m in parts[0]["forecasts"]}
    metrics = score(cat["actual"], forecasts, cat["scale"], sidx[order], list(meta.ids))
    pos = {sid: i for i, sid in enumerate(meta.ids)}

    def ordered(frames: list[pd.DataFrame], col: str) -> pd.DataFrame:
        out = pd.concat(frames, ignore_index=True)
        key = out[col].astype(str).map(pos).to_numpy()
        return out.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)
    rows = ordered([p["rows"] for p in parts], "series")
    forecast = None if parts[0]["forecast"] is None else ordered([p["forecast"] for p in parts], meta.id_col)
    bt = Backtest(series_idx=sidx[order], origins=cat["origins"], actual=cat["actual"], forecasts=forecasts,
                  scale=cat["scale"], metrics=metrics)
    return bt, forecast, rows
