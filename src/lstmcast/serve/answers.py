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
    values = [_json_column(a) for a in table.arrays]
    cells = [_json_cells(a, v) for a, v in zip(table.arrays, values)]
    if any(c is None for c in cells) or not table.columns:
        records = [dict(zip(table.columns, row)) for row in zip(*values)]
        return json.dumps({"forecast": records}, allow_nan=False).encode()
    row = "{" + ", ".join(_ENCODE_TEXT(str(c)).replace("%", "%%") + ": %s" for c in table.columns) + "}"
    return ('{"forecast": [' + ", ".join(row % r for r in zip(*cells)) + "]}").encode()


def _json_cells(array: np.ndarray, values: list[Any]) -> list[str] | None:
    """A column's values as JSON text, or None where json.dumps must decide (non-finite numbers, mixed objects)."""
    kind = array.dtype.kind
    if kind == "f":
        return list(map(float.__repr__, values)) if np.isfinite(array).all() else None
    if kind in "iu":
        return list(map(int.__repr__, values))
    if all(type(v) is str for v in values):  # times as text, ids
        return list(map(_ENCODE_TEXT, values))
    return None


def _json_column(values: np.ndarray) -> list[Any]:
    """A column as JSON values; naive times as predict's CSV writes them ("2024-01-13 12:00:00")."""
    if values.dtype.kind == "M":
        stamps = values.astype("datetime64[ns]")
        if not (stamps.view(np.int64) % 1_000_000_000).any():  # whole seconds: numpy formats them 10x faster
            return [t.replace("T", " ") for t in np.datetime_as_string(stamps, unit="s").tolist()]
        return pd.Series(values).astype(str).tolist()
    if values.dtype.kind == "O":  # ids, or zoned times (pandas Timestamps)
        return [v if isinstance(v, (str, int, float)) or v is None else str(v) for v in values.tolist()]
    return values.tolist()
