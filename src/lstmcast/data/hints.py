"""Diagnoses that name the setting a table needs when it looks like another layout than the config says.

A long table read without ``data.id_col`` repeats every timestamp once per series: rather than only
"N duplicated timestamps", name the column that makes (time, column) unique, so the fix is one flag. A
numeric column holding '12,5' was written with decimal commas: name data.decimal.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, cut, short
from .grid import stamp
from .io import table_rows

if TYPE_CHECKING:
    import pandas as pd

    from ..config import DataConfig

_DECIMAL_COMMA = re.compile(r"\s*[+-]?\d{1,3}(?:[.\s]?\d{3})*,\d+\s*")  # 12,5  1.234,5  -0,25
_MAX_CANDIDATES = 20  # columns tried; each costs one duplicated() pass over the table


def refuse_hidden_series(df: pd.DataFrame, cfg: DataConfig, times: np.ndarray, used: list[str]) -> None:
    """Without ``data.id_col``: if timestamps repeat and one other text or integer column makes every (time,
    column) pair unique, a DataError naming it (D3); otherwise nothing (the usual duplicate message follows)."""
    import pandas as pd

    if cfg.id_col or cfg.format == "wide" or len(times) < 2:
        return
    stamps = pd.Series(times)
    dup = stamps.duplicated().to_numpy()
    if not dup.any():
        return
    taken = {cfg.time_col, "__row__", *used}
    for col in [c for c in df.columns if c not in taken][:_MAX_CANDIDATES]:
        values = df[col]
        if values.dtype.kind in "fcmMb" or values.isna().any() or not 2 <= values.nunique() <= len(df) // 2:
            continue  # measurements, times, flags, row numbers: not series ids
        if not pd.DataFrame({"t": stamps, "c": values.to_numpy()}).duplicated().any():
            first = int(np.flatnonzero(dup)[0])
            raise DataError(
                f"{int(dup.sum())} duplicated timestamps (first {stamp(times[first])} at "
                f"{table_rows(df)[first]}): the table looks like several series in long format, one per value "
                f"of column {short(str(col))} ({values.nunique()} values), which makes every timestamp unique: set "
                f"data.id_col: {cut(str(col))} (CLI: --id-col {cut(str(col))})")


def decimal_comma_hint(value: object) -> str:
    """For a numeric column's text cell such as '12,5': the setting that reads decimal commas; else ""."""
    if isinstance(value, str) and _DECIMAL_COMMA.fullmatch(value):
        return (" (it looks like a decimal comma: set data.decimal: ',' (CLI: --set data.decimal=,), with "
                "data.delimiter: ';' for a ';'-separated file)")
    return ""
