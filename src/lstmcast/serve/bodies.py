"""Request bodies as tables: JSON records, CSV or Arrow IPC, chosen by the Content-Type header.

Nothing here touches a path a client names: a CSV body is parsed from memory with the same options `predict` reads
a CSV file with (delimiter, decimal mark, the id column as text, D16). Every refusal is a DataError, which the app
answers with 400 and the message.
"""

from __future__ import annotations

import io
import json
import operator
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lstmcast.errors import DataError, cut, short

if TYPE_CHECKING:
    from lstmcast.run.meta import RunMeta

JSON_TYPES = ("application/json", "text/json")
CSV_TYPES = ("text/csv", "application/csv")
ARROW_TYPES = ("application/vnd.apache.arrow.stream", "application/vnd.apache.arrow.file")
KNOWN = JSON_TYPES + CSV_TYPES + ARROW_TYPES
_FIFTH = operator.itemgetter(4)
_NA_TEXT = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "#N/A", "n/a", "-nan", "<NA>", "None")


class UnsupportedType(DataError):
    """A body of a content type the service does not read (answered 415)."""


class Tables:
    """A body's rows (and future rows) as DataFrames. A JSON body keeps its rows' columns as read (``columns``) and
    builds the rows' DataFrame only when asked: a clean single series goes from the columns to the model's arrays
    (``Engine.check_tables``), and a DataFrame cost more than the rest of the checks."""

    def __init__(self, rows: pd.DataFrame | None = None, future: pd.DataFrame | None = None,
                 columns: dict[str, Any] | None = None):
        if rows is None and columns is None:
            raise ValueError("Tables needs rows or columns")
        self._rows, self.future, self.columns = rows, future, columns

    @property
    def rows(self) -> pd.DataFrame:
        if self._rows is None:
            self._rows = pd.DataFrame(self.columns, copy=False)
        return self._rows


def media_type(header: str | None) -> str:
    return (header or "application/json").split(";")[0].strip().lower()


def read_body(body: bytes, content_type: str | None, meta: RunMeta, delimiter: str | None = None,
              decimal: str = ".") -> Tables:
    """The request's rows (and future rows for a JSON body) as DataFrames, checked only for their form."""
    kind = media_type(content_type)
    if kind in JSON_TYPES:
        return _json_tables(body, meta)
    if kind in CSV_TYPES:
        return Tables(_csv_table(body, meta, delimiter, decimal))
    if kind in ARROW_TYPES:
        return Tables(_arrow_table(body, kind.endswith("file")))
    raise UnsupportedType(f"Content-Type {short(kind)} is not read here: send application/json "
                          '({"rows": [...], "future": [...]}), text/csv or application/vnd.apache.arrow.stream')


def _json_tables(body: bytes, meta: RunMeta) -> Tables:
    try:
        doc = json.loads(body)
    except RecursionError:
        raise DataError("the JSON body nests too deeply to read: send {\"rows\": [records]}, each record one level of "
                        "keys and values") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DataError(f"the body is not valid JSON{where}: {cut(str(exc).split(':')[0])}; send "
                        '{"rows": [{"<time>": ..., "<target>": ...}, ...]}') from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise DataError('the JSON body must be an object with a "rows" list of records (one object per row, '
                        f'keys the column names: {_columns_hint(meta)}), and "future" for known-future covariates')
    unknown = sorted(set(doc) - {"rows", "future"})
    if unknown:
        raise DataError(f"the JSON body has unknown keys {', '.join(short(k) for k in unknown[:5])}: only "
                        '"rows" and "future" are read')
    rows = _columns(doc["rows"], "rows", meta)
    future = pd.DataFrame(_columns(doc["future"], "future", meta), copy=False) if doc.get("future") is not None \
        else None
    return Tables(future=future, columns=rows)


def _columns(items: Any, key: str, meta: RunMeta) -> dict[str, Any]:
    """A list of records as columns (a DataFrame's data): numbers as float64 and naive ISO times as datetime64
    where they are clean, anything else as given, for the validation to read or to name."""
    if not isinstance(items, list) or not items:
        raise DataError(f'"{key}" must be a non-empty list of records ({_columns_hint(meta)})')
    bad = None
    if set(map(type, items)) != {dict}:  # json.loads makes plain dicts: else each item is looked at
        bad = next((i for i, r in enumerate(items) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f'"{key}"[{bad}] is {short(items[bad])}, not a record: each row is an object whose keys '
                        f"are the column names ({_columns_hint(meta)})")
    columns = _same_keys(items)
    if columns is None:
        names = list(dict.fromkeys(k for r in items for k in r))  # every key, in first-seen order
        columns = {str(n): [r.get(n) for r in items] for n in names}
    if meta.id_col and meta.id_col in columns:  # ids are text exactly as written (D16)
        columns[meta.id_col] = [v if v is None else str(v) for v in columns[meta.id_col]]
    if not meta.integer_time and meta.time_col in columns:
        columns[meta.time_col] = _iso_times(columns[meta.time_col])
    for name in [*meta.targets, *meta.features]:
        if name in columns:
            columns[name] = _numbers(columns[name])
    return columns


def _same_keys(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The columns of records that all have the first one's keys (the usual body), transposed in C (a Python loop
    per cell was a third of a request's time in the service); None otherwise (the caller reads key by key)."""
    names = list(items[0])
    if not names or set(map(len, items)) != {len(names)}:
        return None
    try:  # a column a pass (no tuple per record, no transposition)
        return {str(n): list(map(operator.itemgetter(n), items)) for n in names}
    except KeyError:  # a record with other keys
        return None


def _numbers(values: list[Any]) -> Any:
    """A column of JSON numbers as float64 (pandas' own type inference costs more than the forecast); anything else
    (text, null, true) is left as given for the validation to name."""
    if set(map(type, values)) <= {float, int}:  # exactly these types: a bool is no number here
        try:
            return np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float64: the validation names it
            return values
    return values


def _iso_times(values: list[Any]) -> Any:
    """Naive ISO 8601 texts as datetime64[ns] (numpy parses them ~20x faster than pandas), so a clean single series
    takes predict's numpy fast path; anything else (zones, other formats, numbers, missing) is left as given for
    the general validation to read or to name."""
    if values and not (all(issubclass(t, str) for t in set(map(type, values))) and min(map(len, values)) >= 10
                       and set(map(_FIFTH, values)) == {"-"}):
        return values
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns about a zone offset: left to the validation
        try:
            parsed = np.array(values, dtype="datetime64[ns]")
        except (ValueError, UserWarning, OverflowError):
            return values
    return values if np.isnat(parsed).any() else parsed


def _parse_times(frame: pd.DataFrame, meta: RunMeta) -> pd.DataFrame:
    col = meta.time_col
    if meta.integer_time or col not in frame.columns or frame[col].dtype.kind in "Mmiufb":
        return frame  # integer time, already datetimes, or numbers: the validation decides
    parsed = _iso_times(frame[col].tolist())
    if isinstance(parsed, np.ndarray):
        frame[col] = parsed
    return frame


def _csv_table(body: bytes, meta: RunMeta, delimiter: str | None, decimal: str) -> pd.DataFrame:
    sep = delimiter or ","
    idc = meta.id_col
    text: dict[str, Any] = {}
    if idc:  # D16: the id column as text exactly as written ("01" is not "1", "NA" is an id)
        text = {"dtype": {idc: str}, "keep_default_na": False, "na_values": list(_NA_TEXT)}
    try:
        frame = pd.read_csv(io.BytesIO(body), sep=sep, skipinitialspace=True, decimal=decimal, **text)
    except pd.errors.EmptyDataError:
        raise DataError("the CSV body has no header line: expected e.g. 'date,value' on line 1") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"the CSV body could not be read: {cut(str(exc).strip(), 200)}") from None
    except UnicodeDecodeError:
        raise DataError("the CSV body is not UTF-8 text") from None
    if idc and idc in frame.columns:
        frame[idc] = frame[idc].where(frame[idc] != "", None)  # an empty id cell is refused by validation
    frame.index = np.arange(2, len(frame) + 2)  # rows named by their line in the body (the header is line 1)
    if frame.shape[1] == 1 and sep == "," and ";" in str(frame.columns[0]):
        raise DataError(f"the CSV body was read as one column {short(str(frame.columns[0]))}: it looks ';'-separated"
                        "; the service reads the run's data.delimiter (',')")
    return _parse_times(frame, meta)


def _arrow_table(body: bytes, file_format: bool) -> pd.DataFrame:
    import pyarrow as pa

    try:
        reader = pa.ipc.open_file(pa.BufferReader(body)) if file_format else pa.ipc.open_stream(body)
        table = reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise DataError(f"the body is not an Arrow IPC {'file' if file_format else 'stream'}: "
                        f"{cut(str(exc), 200)}") from None
    if len(set(table.column_names)) != len(table.column_names):
        raise DataError("the Arrow body has duplicated column names: each column once")
    return table.to_pandas()


def _columns_hint(meta: RunMeta) -> str:
    cols = [meta.time_col] + ([meta.id_col] if meta.layout == "long" and meta.id_col else [])
    cols += [*meta.targets, *meta.features, *(meta.future_features or [])]
    return "columns " + ", ".join(short(str(c)) for c in cols)
