"""Static covariates: one value per series and column, read from the series' own rows (FAULTS D18).

A static column repeats its series' value on every row of a long table. It must be constant within
each series and never missing. A column is *numeric* when it holds numbers (any numeric dtype, or
Python numbers in an object column) and *categorical* when it holds text (strings, a pandas
category); numeric ones become float64 (to be scaled), categorical ones stay strings (to be embedded).

The same function serves training and predict (``static_for``), so a series never seen in training
takes its statics from its own rows.

>>> import pandas as pd
>>> df = pd.DataFrame({"id": ["a", "a", "b"], "region": ["n", "n", "s"], "cap": [1.5, 1.5, 2.0]})
>>> from lstmcast.config import DataConfig
>>> sv = static_for(df, DataConfig(id_col="id", static_features=["region", "cap"]), ["a", "b"])
>>> sv.numeric_names, sv.numeric[:, 0].tolist(), sv.categorical[:, 0].tolist()
(['cap'], [1.5, 2.0], ['n', 's'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, plain, short
from .grid import fmt, label
from .io import missing_columns, row_name

if TYPE_CHECKING:
    import pandas as pd

    from ..config import DataConfig

_NUMERIC_KINDS = {"integer", "floating", "mixed-integer-float", "decimal", "boolean"}


@dataclass(frozen=True)
class StaticValues:
    """Static covariates of S series, rows in the order of ``ids``.

    ``numeric`` (S, Kn) float64 with columns ``numeric_names``; ``categorical`` (S, Kc) str with
    columns ``categorical_names``. Either may have zero columns.
    """

    ids: list[str]
    numeric_names: list[str]
    numeric: np.ndarray
    categorical_names: list[str]
    categorical: np.ndarray

    @property
    def names(self) -> list[str]:
        """All static columns: numeric ones first, then categorical ones."""
        return self.numeric_names + self.categorical_names

    def take(self, ids: list[str]) -> StaticValues:
        """The rows of ``ids`` (each must be one of ``self.ids``), in that order."""
        pos = {s: i for i, s in enumerate(self.ids)}
        missing = [s for s in ids if s not in pos]
        if missing:
            raise DataError(f"no static values for {fmt([label(s) for s in missing])}")
        idx = np.array([pos[s] for s in ids], dtype=np.int64)
        return StaticValues(list(ids), self.numeric_names, self.numeric[idx], self.categorical_names,
                            self.categorical[idx])


def is_categorical(col: pd.Series) -> bool:
    """Text (or a pandas category of text) is categorical; numbers and booleans are numeric."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return False
    return pd.api.types.infer_dtype(col, skipna=True) not in _NUMERIC_KINDS


def _series_codes(df: pd.DataFrame, cfg: DataConfig, ids: list[str]) -> np.ndarray:
    """Each row's position in ``ids`` (-1: a series not asked for); a DataError for a series without rows."""
    import pandas as pd

    if not cfg.id_col:  # one series: the whole table
        if len(ids) != 1:
            raise DataError(f"static features of {len(ids)} series need data.id_col to tell the series apart")
        return np.zeros(len(df), dtype=np.int64)
    codes, uniques = pd.factorize(df[cfg.id_col], sort=False)
    pos = {s: i for i, s in enumerate(ids)}
    lookup = np.array([pos.get(str(u), -1) for u in uniques] + [-1], dtype=np.int64)
    rows = lookup[codes]  # codes are -1 for an empty id: lookup[-1] is the sentinel -1
    found = np.zeros(len(ids), dtype=bool)
    found[rows[rows >= 0]] = True
    if not found.all():
        absent = [ids[i] for i in np.flatnonzero(~found)]
        raise DataError(f"no rows for {fmt([label(s) for s in absent])} to read static features "
                        f"{cfg.static_features} from: every series needs its rows in the data")
    return rows


def _column_codes(col: pd.Series, categorical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(codes per row with -1 for missing, distinct values), numbers as float64 and text as str."""
    import pandas as pd

    if categorical:
        codes, uniques = pd.factorize(col, sort=False)  # NaN, None, pd.NA -> -1
        text = np.array([str(u) for u in uniques], dtype=str)
        blank = np.array([not t.strip() for t in text] + [True], dtype=bool)  # a blank cell is missing too
        return np.where(blank[codes], -1, codes), text
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    codes, uniques = pd.factorize(values, sort=False)
    return codes, np.asarray(uniques, dtype=np.float64)


def _row(df: pd.DataFrame, i: int) -> str:
    if "__row__" not in df.columns:
        return f"row {short(df.index[i])}" if isinstance(df.index[i], str) else f"row {df.index[i]}"
    return row_name(df["__row__"].iat[i], df.attrs.get("row_kind", "row"))


def _first_rows(s: np.ndarray, n_series: int) -> np.ndarray:
    """(S,) the first of the rows ``s`` (series of each row, all >= 0) of each series, in O(N): only the
    starts of runs of one series (few in a table grouped by series) are sorted."""
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    present, at = np.unique(s[starts], return_index=True)
    first = np.full(n_series, -1, dtype=np.int64)
    first[present] = starts[at]
    return first


def _per_series(df: pd.DataFrame, name: str, wanted: np.ndarray, s: np.ndarray, first: np.ndarray,
                codes: np.ndarray, uniques: np.ndarray, ids: list[str]) -> np.ndarray:
    """The one value of column ``name`` in each series (S,), or a DataError naming the series and rows.
    ``wanted``: the table rows of the series asked for, ``s`` their series, ``first`` each series' first."""
    c = codes[wanted]
    missing = c < 0
    if missing.any():
        sid = ids[s[missing][0]]
        where = wanted[missing & (s == s[missing][0])]
        raise DataError(f"{label(sid)}: static feature {short(name)} is missing (empty) at "
                        f"{fmt([_row(df, i) for i in where])}: every row of a series needs its static value")
    ref = c[first[s]]
    odd = np.flatnonzero(ref != c)
    if len(odd):
        k = odd[0]
        a, b = first[s[k]], k
        raise DataError(f"{label(ids[s[k]])}: static feature {short(name)} changes within the series: "
                        f"{_shown(uniques[c[a]])} at {_row(df, wanted[a])} but {_shown(uniques[c[b]])} at "
                        f"{_row(df, wanted[b])}. A static feature holds one value per series: fix the rows, or "
                        "move the column to data.features if it varies over time")
    return uniques[c[first]]


def _shown(value: object) -> str:
    return plain(value)


def static_for(df: pd.DataFrame, cfg: DataConfig, ids: list[str]) -> StaticValues:
    """The static features ``cfg.static_features`` of the series ``ids``, from their rows of ``df``.

    ``df``: the raw table (``io.read_table``'s, whose ``__row__`` names rows in messages; any DataFrame
    works). ``ids``: series names as a SeriesSet holds them (``str`` of the id column; ``[""]`` for a
    table of one series). Used both at fit and at predict, so a new series' statics come from its own
    rows. DataError (D18) for a value that changes within a series (naming the series, the column, two
    differing values and their rows), a missing value, or a series without rows.
    """
    names = list(cfg.static_features)
    missing_columns(df, [("data.static_features", n) for n in names])
    series = _series_codes(df, cfg, ids)
    wanted = np.flatnonzero(series >= 0)
    s = series[wanted]
    first = _first_rows(s, len(ids))
    num_names, cat_names, num_cols, cat_cols = [], [], [], []
    for name in names:
        categorical = is_categorical(df[name])
        codes, uniques = _column_codes(df[name], categorical)
        per = _per_series(df, name, wanted, s, first, codes, uniques, ids)
        (cat_names if categorical else num_names).append(name)
        (cat_cols if categorical else num_cols).append(per)
    S = len(ids)
    numeric = np.column_stack(num_cols).astype(np.float64) if num_cols else np.empty((S, 0), dtype=np.float64)
    categorical = np.column_stack(cat_cols).astype(str) if cat_cols else np.empty((S, 0), dtype=str)
    _check_finite(numeric, num_names, ids)
    return StaticValues(list(ids), num_names, numeric, cat_names, categorical)


def _check_finite(numeric: np.ndarray, names: list[str], ids: list[str]) -> None:
    bad = ~np.isfinite(numeric) | (np.abs(numeric) > np.finfo(np.float32).max)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{label(ids[i])}: static feature {short(names[j])} is {plain(numeric[i, j])}, not a finite "
                        "number "
                        "within float32 range: fix the value")
