"""Read CSV / Parquet files (or take a DataFrame) into a raw table, with clear errors (D11)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_OTHER_DELIMITERS = {";": "';'", "\t": "'\\t' (tab)", "|": "'|'"}
PARQUET_SUFFIXES = {".parquet", ".pq"}


def bundled_path(name: str = "co2_weekly.csv") -> Path:
    """Path of a dataset shipped inside the package (no download)."""
    return Path(__file__).resolve().parent.parent / "resources" / name


def read_table(source: str | os.PathLike[str] | pd.DataFrame, delimiter: str | None = None) -> pd.DataFrame:
    """Return the raw table with an added ``__row__`` column naming each row for error messages.

    For files ``__row__`` is the file line (header = line 1); for DataFrames it is the index label.
    """
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        df = source.copy()
        df["__row__"] = [f"row {i!r}" for i in df.index]
        df = df.reset_index(drop=True)
        origin = "the DataFrame"
    else:
        path = Path(source)
        origin = str(path)
        df = _read_file(path, delimiter)
        df["__row__"] = [f"line {i + 2}" for i in range(len(df))] if path.suffix.lower() not in PARQUET_SUFFIXES \
            else [f"row {i}" for i in range(len(df))]
    if len(df.columns) <= 1:
        raise DataError(f"{origin} has no columns: expected a time column and at least one value column")
    if len(df) == 0:
        raise DataError(f"{origin} has a header but no data rows: add data or check the file")
    df.attrs["origin"] = origin
    return df


def _read_file(path: Path, delimiter: str | None) -> pd.DataFrame:
    import pandas as pd

    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist: check --data / data.path")
    if path.is_dir():
        raise DataError(f"{path} is a folder: give a CSV or Parquet file to --data / data.path")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes): expected a header line and data rows")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise DataError(f"{path}: cannot read as Parquet ({exc}); is it a CSV? rename it to .csv") from None
    try:
        df = pd.read_csv(path, sep=delimiter or ",", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} has no header line: expected e.g. 'date,value' on line 1") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot parse as CSV ({exc}); check the delimiter (data.delimiter)") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; is it a binary or Parquet file with a wrong suffix?") from None
    if df.shape[1] == 1 and delimiter is None:
        header = str(df.columns[0])
        for sep, name in _OTHER_DELIMITERS.items():
            if sep in header:
                raise DataError(
                    f"{path}: read as one column {header!r}; the file looks {name}-separated: "
                    f"set data.delimiter: {sep!r} (CLI: --set data.delimiter={sep!r})"
                )
    return df
