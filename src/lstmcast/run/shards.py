"""``data.shard_series`` around training: the ranks agree on what the model is, and rank 0 gets every series'
scaler, metadata, backtest and forecast, though each rank read only its own series (data/shard.py).

- ``load``: this rank's series and every id (sorted: the order a one-process run gives them);
- ``together``: a step that may refuse one rank's series refuses on every rank, with that rank's message;
- ``agree``: window, season, frequency and channels equal on every rank (an auto window: the smallest);
- ``merge_scaler_meta``: scaler.json and meta.json over every series, on every rank (all-gathered).

The backtest and forecast of every series: inference/sharded.py.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from lstmcast import errors
from lstmcast.errors import ConfigError, LstmcastError

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.data.validate import SeriesSet
    from lstmcast.training.distributed import Distributed

log = logging.getLogger(__name__)
T = TypeVar("T")


def load(data: Any, cfg: ForecastConfig, dist: Distributed | None) -> tuple[Distributed, SeriesSet, list[str]]:
    from lstmcast.data.shard import load_shard, refuse_unshardable

    if dist is None:
        refuse_unshardable(data if data is not None else cfg.data.path, cfg, 1)
    dist = dataclasses.replace(dist, sharded=True)
    series, ids = together(dist, load_shard, data, cfg, dist.rank, dist.world)
    return dist, series, ids


def together(dist: Distributed | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on every rank, and where it raised a user's error (LstmcastError) on any rank, that error
    on every rank: the ranks hold different series, so one rank's DataError must not leave the others waiting
    on a lost peer (exit 130) but stop them all with its message and exit code."""
    if dist is None or not dist.sharded:
        return fn(*args)
    failure, result = None, None
    try:
        result = fn(*args)
    except LstmcastError as exc:
        failure = (type(exc).__name__, str(exc))
    failed = [(r, f) for r, f in enumerate(dist.gather(failure)) if f is not None]
    if failed:
        rank, (kind, text) = failed[0]  # type: ignore[misc]
        cls = getattr(errors, kind, LstmcastError)
        raise cls(text if rank == dist.rank else f"rank {rank} of {dist.world}: {text}") from None
    return result  # type: ignore[return-value]


def agree(prep: Prepared, cfg: ForecastConfig, dist: Distributed, precision: str) -> Prepared:
    """The same window, season, frequency and channels on every rank, or a ConfigError saying which to set."""
    from lstmcast.data.prepare import prepare

    s = prep.series
    mine = {"freq": s.freq, "season": prep.season, "channels": s.channel_names, "inputs": int(prep.scaled.shape[1])}
    views = dist.gather({**mine, "window": prep.window})
    for key, fix in (("freq", "data.freq"), ("season", "data.season"), ("channels", "the same columns in every "
                                                                         "file"), ("inputs", "data.calendar")):
        seen = [v[key] for v in views]  # type: ignore[index]
        if any(x != seen[0] for x in seen):
            raise ConfigError(f"data.shard_series: the ranks' series differ in {key} ({seen}, by rank): set {fix} "
                              "so every rank prepares its series alike")
    window = min(int(v["window"]) for v in views)  # type: ignore[index]
    if window != prep.window:  # an auto window fits each rank's shortest series: the smallest fits them all
        log.info("rank %d: window %d (the smallest of the ranks' auto windows)", dist.rank, window)
        prep = prepare(s, cfg.data.model_copy(update={"window": window}), precision, cfg.model.id_embedding)
    return prep


def merge_scaler_meta(meta: Any, scaler: dict[str, Any], ids: list[str], dist: Distributed) -> tuple[Any, dict]:
    """Every series' rows of scaler.json and meta.json, in the sorted order of ``ids`` (all the dataset's)."""
    per = ("ids", "lengths", "train_end", "val_end", "last_time")
    mine = {k: list(getattr(meta, k)) for k in per}
    mine.update(mean=np.asarray(scaler["mean"]).tolist(), std=np.asarray(scaler["std"]).tolist(), anchor=meta.anchor)
    parts: list[dict[str, Any]] = dist.gather(mine)  # type: ignore[assignment]
    pos = {sid: i for i, sid in enumerate(ids)}
    rows = [(pos[sid], p, j) for p in parts for j, sid in enumerate(p["ids"])]
    rows.sort(key=lambda r: r[0])
    if len(rows) != len(ids):
        raise ConfigError(f"data.shard_series: the ranks validated {len(rows)} series of the {len(ids)} ids read; "
                          "check that every id names one series")
    merged = {k: [p[k][j] for _, p, j in rows] for k in (*per, "mean", "std")}
    first = min(parts, key=lambda p: pos[p["ids"][0]])  # the first series' first time, as one process
    meta = meta.model_copy(update={**{k: merged[k] for k in per}, "anchor": first["anchor"]})
    scaler = {**scaler, "ids": merged["ids"], "mean": np.asarray(merged["mean"]), "std": np.asarray(merged["std"])}
    return meta, scaler
