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

_DELIMITERS = {",": "','", ";": "';'", "\t": "'\\t' (tab)", "|": "'|'"}
PARQUET_SUFFIXES = {".parquet", ".pq"}


def bundled_path(name: str = "co2_weekly.csv") -> Path:
    """Path of a dataset shipped inside the package (no download)."""
    return Path(__file__).resolve().parent.parent / "resources" / name


def read_table(source: str | os.PathLike[str] | pd.DataFrame, delimiter: str | None = None) -> pd.DataFrame:
    """Return the raw table with an added ``__row__`` column locating each row for error messages.

    ``__row__`` holds positions (files: line = position + 2, the header being line 1; Parquet: row
    position) or, for a DataFrame, its index labels; ``attrs["row_kind"]`` says which. Rows are named
    only when a message needs them, never as one string per row (5 million rows would cost ~400 MB).
    """
    import numpy as np
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        if isinstance(source.index, pd.DatetimeIndex) and source.index.name and \
                source.index.name not in source.columns:  # time in a named index: make it a column
            source = source.reset_index()
        df = source.copy(deep=False)  # the caller's frame is never modified (copy-on-write)
        df["__row__"] = source.index.to_numpy()
        df = df.reset_index(drop=True)
        origin, kind = "the DataFrame", "row"
    else:
        path = Path(source)
        origin = str(path)
        df = _read_file(path, delimiter)
        df["__row__"] = np.arange(len(df), dtype=np.int64)
        kind = "row" if path.suffix.lower() in PARQUET_SUFFIXES else "line"
    if len(df.columns) <= 2:  # __row__ and at most one real column
        only = f" only one column {str(df.columns[0])!r}" if len(df.columns) == 2 else " no columns"
        raise DataError(f"{origin} has{only}: expected a time column and at least one value column "
                        "(for a file: check the delimiter, data.delimiter)")
    if len(df) == 0:
        raise DataError(f"{origin} has a header but no data rows: add data or check the file")
    df.attrs["origin"] = origin
    df.attrs["row_kind"] = kind
    return df


def row_name(value: object, kind: str) -> str:
    """``line 7`` (CSV line, header = line 1) or ``row 5`` / ``row 'a'`` (Parquet position, DataFrame label)."""
    import numpy as np
    import pandas as pd

    if kind == "line":
        return f"line {int(value) + 2}"  # type: ignore[call-overload]
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    return f"row {value!r}" if isinstance(value, str) else f"row {value}"


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
    if df.shape[1] == 1:
        header = str(df.columns[0])
        for sep, name in _DELIMITERS.items():
            if sep != (delimiter or ",") and sep in header:
                raise DataError(
                    f"{path}: read as one column {header!r}; the file looks {name}-separated: "
                    f"set data.delimiter: {sep!r} (CLI: --set data.delimiter={sep!r})"
                )
    return df
