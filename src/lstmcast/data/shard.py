"""``data.shard_series``: each rank of a distributed run reads and validates only its own series.

For a long table too big for one machine, stored as Parquet (one file or a folder of files, read with
``pyarrow.dataset``): every rank reads the id column alone (column projection), takes the sorted distinct
ids, keeps its share (``assign``: round-robin over the sorted ids) and reads only those rows
(``dataset.to_table(filter=field(id).isin(mine))``). Scalers stay per series, as always. Arrow's scanner
decodes the other series' rows batch by batch and drops them (never holding them); a dataset partitioned by
the id (``sid=a/part.parquet``, hive style) has the other series' files skipped unopened.

Round-robin rather than a hash of the id: the ranks' series counts differ by at most one (a hash gives a
binomial spread: ~±sqrt(S / N) series), and every rank computes the same sorted list, so the assignment is
stable for a given set of ids.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.data.io import release_arrow_memory, warnings_as_log
from lstmcast.data.validate import validate_frame
from lstmcast.errors import ConfigError, DataError, cut, short_list

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.config import ForecastConfig
    from lstmcast.data.validate import SeriesSet

log = logging.getLogger(__name__)
_PARQUET = (".parquet", ".pq")


def assign(n_series: int, rank: int, world: int) -> np.ndarray:
    """Positions in the sorted distinct ids that rank ``rank`` of ``world`` owns: rank, rank + world, ..."""
    return np.arange(rank, n_series, world, dtype=np.int64)


def refuse_unshardable(source: Any, cfg: ForecastConfig, world: int) -> None:
    """ConfigError naming what data.shard_series cannot work with, and the fix."""
    fix = "or set data.shard_series=false (every rank then reads the whole table)"
    if world <= 1:
        raise ConfigError("data.shard_series=true needs several ranks (lstmcast train --nproc N or torchrun), "
                          f"but this is one process: start it with --nproc N, {fix}")
    if not cfg.data.id_col:
        raise ConfigError(f"data.shard_series=true needs a long table with data.id_col (series are what the ranks "
                          f"share): set data.id_col, {fix}")
    if not isinstance(source, (str, os.PathLike)) or not _is_parquet(Path(source)):
        what = type(source).__name__ if not isinstance(source, (str, os.PathLike)) else repr(str(source))
        raise ConfigError(f"data.shard_series=true reads a Parquet file or a folder of Parquet files, got {what}: "
                          f"convert the table to Parquet (e.g. pandas DataFrame.to_parquet), {fix}")
    problems = [(cfg.model.id_embedding, "model.id_embedding=true (the id vocabulary spans every series)"),
                (bool(cfg.data.static_features), "data.static_features (encoded over every series)"),
                (bool(cfg.model.levels), "model.levels (interval calibration pools every series' residuals)")]
    bad = [why for on, why in problems if on]
    if bad:
        raise ConfigError(f"data.shard_series=true does not support {'; '.join(bad)}: drop them, {fix}")


def _is_parquet(path: Path) -> bool:
    if path.is_dir():
        return any(p.suffix.lower() in _PARQUET for p in path.rglob("*"))
    return path.suffix.lower() in _PARQUET


def read_shard(path: str | os.PathLike[str], id_col: str, rank: int, world: int) -> tuple[pd.DataFrame, list[str]]:
    """This rank's rows of the Parquet dataset at ``path`` as read_table gives them (``__row__``: the row's
    position in the whole dataset), and every id of the dataset as text in sorted order."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    where = f"Parquet dataset {str(path)!r}"
    try:
        dataset = ds.dataset(str(path), format="parquet", partitioning="hive")  # id=.../ folders: files skipped
        column = dataset.to_table(columns=[id_col]).column(id_col) if id_col in dataset.schema.names else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{where} cannot be read as Parquet ({cut(str(exc), 200)}): check --data / data.path") from None
    if column is None:
        raise DataError(f"data.id_col {id_col!r} is not a column of {where}. Columns present: "
                        f"{short_list(dataset.schema.names)}")
    uniq = pc.unique(column)
    uniq = uniq.take(pc.sort_indices(uniq))  # the order validate's factorize(sort=True) gives
    if len(uniq) < world:  # every rank sees the count, so all refuse alike (none waits on a lost peer)
        # one series cannot be sharded at all (--nproc 1 is refused above): then only shard_series=false works
        fix = f"use at most {len(uniq)} ranks (--nproc {len(uniq)}) or set data.shard_series=false" \
            if len(uniq) >= 2 else "set data.shard_series=false: one series cannot be split among ranks (each " \
            "rank then reads the whole table)"
        raise ConfigError(f"{where} holds {len(uniq)} series for {world} ranks, and data.shard_series gives each rank "
                          f"its own series: rank {world - 1} would get none; {fix}")
    mine = uniq.take(assign(len(uniq), rank, world))
    rows = np.flatnonzero(pc.is_in(column, value_set=mine).to_numpy(zero_copy_only=False))
    frame = dataset.to_table(filter=pc.field(id_col).isin(mine)).to_pandas()
    frame["__row__"] = rows if len(rows) == len(frame) else np.arange(len(frame))
    frame.attrs["origin"], frame.attrs["row_kind"] = f"{where} (rank {rank}'s series)", "row"
    log.info("rank %d of %d reads %d of %d series: %d rows", rank, world, len(mine), len(uniq), len(frame))
    return frame, [str(u) for u in uniq.to_pylist()]


def load_shard(source: Any, cfg: ForecastConfig, rank: int, world: int) -> tuple[SeriesSet, list[str]]:
    """This rank's series, read and validated (``load_series`` for one rank's share), and every id."""
    source = cfg.data.path if source is None else source
    refuse_unshardable(source, cfg, world)
    with warnings_as_log("the data"):
        frame, ids = read_shard(source, str(cfg.data.id_col), rank, world)
        series = validate_frame(frame, cfg.data, cfg.train.precision)
    del frame
    release_arrow_memory()
    return series, ids
