"""Read CSV / Parquet files (or take a DataFrame) into a raw table, with clear errors (D11)."""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, cut, did_you_mean, short, short_list

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

_DELIMITERS = {",": "','", ";": "';'", "\t": "'\\t' (tab)", "|": "'|'"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
# pandas' default missing-value spellings, applied to every column but the id column (D16)
_NA_TEXT = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
            "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


_DAY_FIRST = re.compile(r"Parsing dates in (\S+) format when dayfirst=False")
_NO_FORMAT = "Could not infer format"


@contextmanager
def warnings_as_log(origin: str) -> Iterator[None]:
    """Reading and validating a table: pandas' and numpy's warnings become lstmcast log lines naming the table
    (never raw ``UserWarning`` text with a source line on stderr, STYLE rule 10). Warnings about code rather
    than data (deprecations) are logged at debug level only."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen: set[str] = set()
    for item in caught:
        text = str(item.message)
        if text in seen:
            continue
        seen.add(text)
        if issubclass(item.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            log.debug("%s: %s", origin, cut(text, 200))
        else:
            log.warning("%s: %s", origin, _warning_text(text))


def _warning_text(text: str) -> str:
    day_first = _DAY_FIRST.search(text)
    if day_first:
        fmt_ = day_first.group(1)
        return (f"the timestamps were read day first ({fmt_}), the only reading that fits them; set "
                f"data.time_format: '{fmt_}' to state it")
    if _NO_FORMAT in text:
        return ("the timestamps follow no single format, so each was parsed on its own (slow, and a date such as "
                "01/02/2024 may be read either way): set data.time_format to the column's format")
    return cut(text, 200)


def bundled_path(name: str = "co2_weekly.csv") -> Path:
    """Path of a dataset shipped inside the package (no download)."""
    return Path(__file__).resolve().parent.parent / "resources" / name


def read_table(source: str | os.PathLike[str] | pd.DataFrame, delimiter: str | None = None,
               id_col: str | None = None, decimal: str = ".") -> pd.DataFrame:
    """Return the raw table with an added ``__row__`` column locating each row for error messages.

    ``__row__`` holds positions (files: line = position + 2, the header being line 1; Parquet: row
    position) or, for a DataFrame, its index labels; ``attrs["row_kind"]`` says which. ``id_col`` (CSV) is
    read as text exactly as written (D16). Rows are named
    only when a message needs them, never as one string per row (5 million rows would cost ~400 MB).
    """
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        # time in a named DatetimeIndex: make it a column (an integer index stays row labels: integer time
        # belongs in a column, and a wide table would otherwise gain the index as a series)
        if isinstance(source.index, pd.DatetimeIndex) and source.index.name and \
                source.index.name not in source.columns:
            source = source.reset_index()
        _refuse_duplicates([str(c) for c in source.columns], "the DataFrame")
        df = source.copy(deep=False)  # the caller's frame is never modified (copy-on-write)
        df["__row__"] = source.index.to_numpy()
        df = df.reset_index(drop=True)
        origin, kind = "the DataFrame", "row"
    else:
        if not isinstance(source, (str, os.PathLike)):  # Path(ndarray) would raise a TypeError about pathlib
            raise DataError(f"expected a CSV/Parquet path (str or pathlib.Path) or a pandas DataFrame, got "
                            f"{_type_name(source)}: wrap the values in a DataFrame with the time column (and id "
                            "column) and the value columns, or write them to a file")
        path = Path(source)
        origin = _describe(path)
        df = _read_file(path, delimiter, id_col, decimal)
        df["__row__"] = np.arange(len(df), dtype=np.int32 if len(df) < 2**31 else np.int64)
        kind = "row" if path.suffix.lower() in PARQUET_SUFFIXES else "line"
    if len(df.columns) <= 2:  # __row__ and at most one real column
        only = f" only one column {short(str(df.columns[0]))}" if len(df.columns) == 2 else " no columns"
        raise DataError(f"{origin} has{only}: expected a time column and at least one value column "
                        "(for a file: check the delimiter, data.delimiter)")
    if len(df) == 0:
        raise DataError(f"{origin} has a header but no data rows: add data or check the file")
    df.attrs["origin"] = origin
    df.attrs["row_kind"] = kind
    return df


def _type_name(value: object) -> str:
    kind = type(value)
    return f"a {kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else f"a {kind.__qualname__}"


def frame_of_series(values: pd.Series, time_col: str | None, target: str | None) -> pd.DataFrame:
    """A pandas Series with a DatetimeIndex (one series, as Darts and statsmodels hold it) as the table lstmcast
    reads: columns ``time_col`` (default the index's name, else "time") and ``target`` (default the Series'
    name, else "y")."""
    import pandas as pd

    if not isinstance(values.index, pd.DatetimeIndex):
        raise DataError(f"a pandas Series needs its timestamps as a DatetimeIndex, got a {type(values.index).__name__}"
                        ": set one (s.index = pd.to_datetime(dates)), or pass a DataFrame with a time column and a "
                        "value column (data.time_col, data.target)")
    time_name = time_col or (str(values.index.name) if values.index.name is not None else "time")
    value_name = target or (str(values.name) if values.name is not None else "y")
    if time_name == value_name:
        raise DataError(f"the Series and its index are both named {value_name!r}: rename one (s.rename('y'))")
    return pd.DataFrame({time_name: values.index.to_numpy(), value_name: values.to_numpy()})


def row_name(value: object, kind: str) -> str:
    """``line 7`` (CSV line, header = line 1) or ``row 5`` / ``row 'a'`` (Parquet position, DataFrame label)."""
    import pandas as pd

    if kind == "line":
        return f"line {int(value) + 2}"  # type: ignore[call-overload]
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    return f"row {short(value)}" if isinstance(value, str) else f"row {value}"


class Rows:
    """Where each row of a series came from (see ``read_table``), named only for error messages."""

    def __init__(self, values: np.ndarray, kind: str):
        self.values, self.kind = values, kind

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, key):  # an int gives the row's name; a mask, slice or order gives Rows

        if isinstance(key, (int, np.integer)):
            return row_name(self.values[key], self.kind)
        return Rows(self.values[key], self.kind)

    def __iter__(self):
        return (row_name(v, self.kind) for v in self.values)


def table_rows(df: pd.DataFrame) -> Rows:
    """The rows of a table from ``read_table`` (its ``__row__`` column; a plain DataFrame: its index)."""
    values = df["__row__"].to_numpy() if "__row__" in df.columns else df.index.to_numpy()
    return Rows(values, df.attrs.get("row_kind", "row"))


def _describe(path: Path) -> str:
    """The path as shown in messages: a very long one is shortened (the user still recognises both ends)."""
    text = str(path)
    return text if len(text) <= 200 else f"{text[:60]}...{text[-60:]} (a path of {len(text)} characters)"


def check_file(path: Path) -> None:
    """Refuse what is not a readable regular file, naming the file and the reason (D11, D16)."""
    where = _describe(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataError(f"data file {where!r} does not exist: check --data / data.path") from None
    except OSError as exc:  # name too long, permission denied on a folder, a loop of links...
        raise DataError(f"data file {where!r} cannot be opened ({exc.strerror or exc}): check --data / "
                        "data.path") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{where} is a folder: give a CSV or Parquet file to --data / data.path")
    if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) or stat.S_ISSOCK(info.st_mode):
        raise DataError(f"{where} is not a regular file (a device or socket, not text): give a CSV or Parquet "
                        "file to --data / data.path")
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:
        raise DataError(f"{where} is empty (0 bytes): expected a header line and data rows")


def _read_file(path: Path, delimiter: str | None, id_col: str | None = None, decimal: str = ".") -> pd.DataFrame:
    check_file(path)
    where = _describe(path)
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return _read_parquet(path, where)
        return _read_csv(path, where, delimiter, id_col, decimal)
    except OSError as exc:  # PermissionError and friends: exit 3 naming the file, not a crash (exit 1)
        raise DataError(f"data file {where!r} cannot be read ({exc.strerror or exc}): check its permissions "
                        "(--data / data.path)") from None


def _refuse_duplicates(names: list[str], where: str) -> None:
    """D16: two columns with one name are ambiguous; pandas would silently rename the second (y -> y.1)."""
    # a blank header cell is not a duplicate: pandas names each one 'Unnamed: k'
    dups = [name for name, n in Counter(names).items() if n > 1 and name]
    if dups:
        shown = short_list(dups)
        raise DataError(f"{where} has duplicated column names {shown}: each column needs a unique name; "
                        "rename or remove the duplicates")


def _read_parquet(path: Path, where: str) -> pd.DataFrame:
    import pandas as pd

    try:
        import pyarrow.parquet as pq

        names = list(pq.read_schema(path).names)  # pandas would fail on duplicates with an arrow message
    except OSError:
        raise  # unreadable: _read_file names the file and the reason
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise DataError(f"{where}: cannot read as Parquet ({cut(str(exc), 200)}); is it a CSV? rename it to "
                        ".csv") from None
    _refuse_duplicates(names, where)
    try:
        frame = pd.read_parquet(path)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - the same for the data pages
        raise DataError(f"{where}: cannot read as Parquet ({cut(str(exc), 200)})") from None
    release_arrow_memory()
    return frame


def release_arrow_memory() -> None:
    """Hand the pages Arrow's allocator keeps after a table is freed back to the system: a Parquet file's text
    columns live in Arrow memory, and freeing the read table left 1.5 GB resident at 46M rows."""
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def _read_csv(path: Path, where: str, delimiter: str | None, id_col: str | None, decimal: str = ".") -> pd.DataFrame:
    import pandas as pd

    sep = delimiter or ","
    try:
        header = pd.read_csv(path, sep=sep, skipinitialspace=True, header=None, nrows=1, dtype=str,
                             keep_default_na=False)
        names = [str(n) for n in header.iloc[0].tolist()] if len(header) else []
        _refuse_duplicates(names, where)
        # D16: the id column is text exactly as written ("01" is not "1", "NA" is an id, not missing)
        text = {"dtype": {id_col: str}, "keep_default_na": False,
                "na_values": {n: sorted(_NA_TEXT) for n in names if n != id_col}} if id_col in names else {}
        df = pd.read_csv(path, sep=sep, skipinitialspace=True, decimal=decimal, **text)
    except pd.errors.EmptyDataError:
        raise DataError(f"{where} has no header line: expected e.g. 'date,value' on line 1") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{where}: {_parser_problem(str(exc), sep, len(names))}") from None
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text; is it a binary or Parquet file with a wrong suffix?") from None
    if df.shape[1] == 1:
        header_text = str(df.columns[0])
        for other, name in _DELIMITERS.items():
            if other != sep and other in header_text:
                raise DataError(
                    f"{where}: read as one column {short(header_text)}; the file looks {name}-separated: "
                    f"set data.delimiter: {short(other)} (CLI: --set data.delimiter={short(other)})"
                )
    return df


_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_OPEN_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")


def _parser_problem(text: str, sep: str, header_fields: int) -> str:
    """pandas' tokenizer message in the user's terms: which line, how many fields, what the header has."""
    shown = _DELIMITERS.get(sep, repr(sep))
    fields = _FIELDS.search(text)
    if fields:
        expected, line, saw = (int(g) for g in fields.groups())
        header = header_fields or expected
        return (f"line {line} has {saw} fields but the header (line 1) has {header}: remove the extra "
                f"{'field' if saw - header == 1 else 'fields'} on that line, or quote values that contain the "
                f"delimiter {shown} (\"a{sep}b\"); if the whole file uses another delimiter, set data.delimiter")
    quote = _OPEN_QUOTE.search(text)
    if quote:
        return (f"a quote (\") opened on line {int(quote.group(1)) + 1} is never closed: close it, or remove the "
                "stray quote character")
    detail = text.replace("Error tokenizing data. C error: ", "").strip()
    return f"cannot parse as CSV ({cut(detail, 200)}); check the delimiter (data.delimiter)"


def missing_columns(df: pd.DataFrame, roles: list[tuple[str, str]]) -> None:
    """DataError naming each ``(config key, column)`` absent from ``df``, the closest match and the columns."""
    origin = df.attrs.get("origin", "the data")
    cols = [str(c) for c in df.columns if c != "__row__"]
    missing = [f"{key} {short(name)} is not a column of {origin}{did_you_mean(name, cols)}"
               for key, name in roles if name not in cols]
    if missing:
        raise DataError("; ".join(missing) + f". Columns present: {short_list(cols)}")
