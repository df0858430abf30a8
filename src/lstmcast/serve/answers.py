"""The forecast's answer: its rows as ``predict`` lays them out, as the JSON text ``json.dumps`` writes (built column
by column) or as CSV."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from lstmcast.serve.engine import Table

_ENCODE_TEXT = json.encoder.encode_basestring_ascii  # json.dumps' own string encoder (ensure_ascii)


def forecast_csv(table: Table) -> str:
    """The forecast rows as the CSV ``predict`` writes (``Accept: text/csv``)."""
    return table.frame().to_csv(index=False)


def forecast_json(table: Table) -> bytes:
    """``{"forecast": [records]}`` exactly as ``json.dumps`` writes it, the records' text formatted column by column
    (json.dumps of the records was half the answer's cost); a column of other values (NaN, mixed objects) takes
    json.dumps itself."""
    cells = [_json_cells(a) for a in table.arrays]
    if any(c is None for c in cells) or not table.columns:
        values = [_json_column(a) for a in table.arrays]
        records = [dict(zip(table.columns, row)) for row in zip(*values)]
        return json.dumps({"forecast": records}, allow_nan=False).encode()
    row = "{" + ", ".join(_ENCODE_TEXT(str(c)).replace("%", "%%") + ": %s" for c in table.columns) + "}"
    return ('{"forecast": [' + ", ".join(row % r for r in zip(*cells)) + "]}").encode()


def _json_cells(array: np.ndarray) -> list[str] | None:
    """A column's values as JSON text, or None where json.dumps must decide (non-finite numbers, mixed objects)."""
    kind = array.dtype.kind
    if kind == "f":
        return list(map(float.__repr__, array.tolist())) if np.isfinite(array).all() else None
    if kind in "iu":
        return list(map(int.__repr__, array.tolist()))
    if kind == "M" and (whole := _whole_seconds(array)) is not None:  # digits, '-', ':', ' ': nothing to escape
        return ['"' + t.replace("T", " ") + '"' for t in np.datetime_as_string(whole, unit="s").tolist()]
    values = _json_column(array)
    if all(type(v) is str for v in values):  # times as text, ids
        return list(map(_ENCODE_TEXT, values))
    return None


def _whole_seconds(values: np.ndarray) -> np.ndarray | None:
    """Naive times as datetime64[ns] where all are whole seconds (numpy formats those 10x faster than pandas)."""
    stamps = values.astype("datetime64[ns]")
    return None if (stamps.view(np.int64) % 1_000_000_000).any() else stamps


def _json_column(values: np.ndarray) -> list[Any]:
    """A column as JSON values; naive times as predict's CSV writes them ("2024-01-13 12:00:00")."""
    if values.dtype.kind == "M":
        whole = _whole_seconds(values)
        if whole is not None:
            return [t.replace("T", " ") for t in np.datetime_as_string(whole, unit="s").tolist()]
        return pd.Series(values).astype(str).tolist()
    if values.dtype.kind == "O":  # ids, or zoned times (pandas Timestamps)
        return [v if isinstance(v, (str, int, float)) or v is None else str(v) for v in values.tolist()]
    return values.tolist()
