"""Read and validate a table for fit, the doctor and tuning: one entry point for every caller."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lstmcast.data.io import read_table, release_arrow_memory, warnings_as_log
from lstmcast.data.validate import SeriesSet, validate_frame
from lstmcast.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.config import ForecastConfig


def load_series(source: str | os.PathLike[str] | pd.DataFrame | SeriesSet | None, cfg: ForecastConfig) -> SeriesSet:
    """Read and validate a file path or DataFrame (``None``: the config's ``data.path``)."""
    if isinstance(source, SeriesSet):  # validated already: tuning loads once and reuses it across trials
        return source
    if source is None:
        source = cfg.data.path
    if source is None:
        raise DataError("no data given: pass a CSV/Parquet path or a DataFrame, or set data.path")
    with warnings_as_log("the data"):
        table = read_table(source, cfg.data.delimiter, cfg.data.id_col, cfg.data.decimal)
        series = validate_frame(table, cfg.data, cfg.train.precision)
        del table
    release_arrow_memory()  # the read table is gone: return its Arrow pages
    return series
