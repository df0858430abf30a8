"""The data invariants (FAULTS.md D1-D18): a raw table in, validated float32 series out.

Invariants of a :class:`SeriesSet` (what every later stage may rely on):
- each series has strictly increasing times on one regular grid of step ``freq``: UTC-naive
  datetime64[ns], or int64 steps with ``integer_time`` (then ``freq`` is the step as text, "1");
- values are float32, channels: targets, then features, then future_features; finite except NaN
  under ``missing: drop-windows``;
- no duplicated timestamps, no text, no inf; columns as named in the config;
- ``static`` holds one value per series and static column (constant within the series, never missing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, plain, short, short_list
from .grid import MAX_LISTED as _MAX_LISTED
from .grid import fmt as _fmt
from .grid import label as _label
from .grid import regularise_zoned as _regularise
from .grid import stamp
from .hints import decimal_comma_hint, refuse_hidden_series
from .io import Rows, missing_columns
from .longtable import validate_long
from .static import StaticValues, static_for
from .times import TIME_RANGE, check_freq, parse_times, rows_at
from .windows import min_train_points, no_trainable_series

if TYPE_CHECKING:
    import pandas as pd

    from ..config import DataConfig

__all__ = ["Rows", "SeriesSet", "TIME_RANGE", "missing_columns", "static_for", "validate_frame"]
log = logging.getLogger(__name__)
_FP16_MAX = 65504.0
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class SeriesSet:
    """Validated series, one entry per series; values are (N_i, T + F + Kf) float32: targets, features
    (past covariates), future_features (known-future covariates), in that order."""

    ids: list[str]
    times: list[np.ndarray]
    values: list[np.ndarray]
    targets: list[str]
    features: list[str]
    freq: str
    time_col: str
    id_col: str | None = None
    layout: str = "single"
    tz: str | None = None
    notes: list[str] = field(default_factory=list)
    future_features: list[str] = field(default_factory=list)
    static: StaticValues | None = None  # rows in ``ids`` order; None without data.static_features
    integer_time: bool = False  # times are int64 steps and freq the step as text ("1")

    @property
    def n_targets(self) -> int:
        """Channels predicted per series: T (1 in wide layout, where each target column is a series)."""
        return 1 if self.layout == "wide" else len(self.targets)

    @property
    def channel_names(self) -> list[str]:
        """Names of the value channels of each series: targets, then features, then future_features."""
        return (["value"] if self.layout == "wide" else self.targets) + self.features + self.future_features

    @property
    def n_past_only(self) -> int:
        """Leading channels known only up to the forecast origin: targets and features (T + F)."""
        return self.n_targets + len(self.features)

    def lengths(self) -> list[int]:
        return [len(v) for v in self.values]


def _check_columns(df: pd.DataFrame, cfg: DataConfig) -> tuple[str, list[str], list[str]]:
    cols = [c for c in df.columns if c != "__row__"]
    listed = short_list(cols)
    if cfg.time_col is None:
        raise DataError(f"no time column given: set --time-col / data.time_col to one of {listed}")
    roles = [("data.time_col", cfg.time_col)] + [("data.target", t) for t in cfg.target]
    roles += [("data.features", f) for f in cfg.features]
    roles += [("data.future_features", f) for f in cfg.future_features]
    roles += [("data.static_features", f) for f in cfg.static_features]
    if cfg.id_col:
        roles.append(("data.id_col", cfg.id_col))
    missing_columns(df, roles)
    targets = list(cfg.target)
    if not targets:
        used = {cfg.time_col, cfg.id_col, *cfg.features, *cfg.future_features, *cfg.static_features}
        candidates = [c for c in cols if c not in used]
        if cfg.format == "wide" and candidates:  # wide: every other column is a series
            log.info("wide format: %d series columns %s", len(candidates), candidates[:10])
            return cfg.time_col, candidates, list(cfg.features)
        if len(candidates) != 1:
            raise DataError(f"no target column given: set --target / data.target to one or more of "
                            f"{short_list(candidates)}")
        targets = candidates
        log.info("using the only value column %r as the target", targets[0])
    return cfg.time_col, targets, list(cfg.features)


def _overflows(value: object) -> bool:
    """Whether ``value`` is a number too large for a float (only Python ints can be)."""
    try:
        float(value)  # type: ignore[arg-type]
    except OverflowError:
        return True
    except (TypeError, ValueError):
        return False
    return False


def _numeric(df: pd.DataFrame, col: str, precision: str, scaling: str = "none") -> np.ndarray:
    import pandas as pd

    raw = df[col]
    try:
        num = pd.to_numeric(raw, errors="coerce")
    except OverflowError:  # a Python int beyond float64 in an object column (10**400): pandas raises, not coerces
        huge = raw.map(_overflows).to_numpy(dtype=bool)
        raise DataError(f"column {short(col)} holds {int(huge.sum())} integers beyond the float range at "
                        f"{rows_at(df, huge)}: lstmcast computes in float32 (|x| <= 3.4e38); fix those cells or "
                        "rescale the column (e.g. divide it by a power of ten)") from None
    bad = (num.isna() & raw.notna()).to_numpy()
    if isinstance(raw.dtype, pd.StringDtype) or raw.dtype == object:
        bad = bad & raw.astype(str).str.strip().ne("").to_numpy()
    if bad.any():
        value = raw[bad].iloc[0]
        raise DataError(f"column {short(col)} must be numeric but holds text: {short(value)} at {rows_at(df, bad)} "
                        f"({int(bad.sum())} cells): fix or blank those cells{decimal_comma_hint(value)}")
    # a float32 column stays float32 (a view, no copy: the series end up float32 anyway); the rest float64
    values = num.to_numpy(dtype=np.float32 if num.dtype == np.float32 else np.float64)
    inf = np.isinf(values)
    if inf.any():
        raise DataError(f"column {short(col)} holds {int(inf.sum())} infinite values at {rows_at(df, inf)}: "
                        "replace them (inf cannot be scaled or learned)")
    big = np.abs(values) > _F32_MAX  # finite in float64, inf once cast to float32 (D14); NaN compares False
    if big.any():
        raise DataError(f"column {short(col)} holds {int(big.sum())} values beyond the float32 range (|x| > 3.4e38) "
                        f"at {rows_at(df, big)}, first {plain(values[big][0])}: lstmcast computes in float32; "
                        "fix those cells or rescale the column (e.g. divide it by a power of ten)")
    if precision == "fp16" and scaling == "none":  # scaled values are checked in prepare
        big = np.abs(np.nan_to_num(values)) > _FP16_MAX
        if big.any():
            raise DataError(f"column {short(col)} has values beyond the float16 range (|x| > 65504) at "
                            f"{rows_at(df, big)}, data.scaling is 'none' and train.precision is fp16: use "
                            "data.scaling: standard, or train.precision bf16 or fp32")
    return values


def _groups(df: pd.DataFrame, cfg: DataConfig, targets: list[str]) -> tuple[list[str], list[pd.DataFrame], str]:
    import pandas as pd

    if cfg.id_col:
        raw = df[cfg.id_col]
        empty = raw.isna().to_numpy()
        if isinstance(raw.dtype, pd.StringDtype) or raw.dtype == object:  # ids read as text (D16): "" is blank
            empty = empty | raw.astype(str).str.strip().eq("").to_numpy()
        if empty.any():
            raise DataError(f"series id column {short(cfg.id_col)} has {int(empty.sum())} empty cells at "
                            f"{rows_at(df, empty)}: every row must name its series")
        ids, parts = [], []
        for key, part in df.groupby(cfg.id_col, sort=True):
            ids.append(str(key))
            parts.append(part)
        return ids, parts, "long"
    if cfg.format == "wide" and len(targets) > 1:
        return list(targets), [df] * len(targets), "wide"
    if cfg.format == "long":
        raise DataError("data.format is 'long' but no data.id_col was given: name the series id column")
    return [""], [df], "single"


def _fill_missing(values: np.ndarray, cols: list[str], policy: str, label: str,
                  rows: Rows | None) -> np.ndarray:
    import pandas as pd

    nan = np.isnan(values)
    if not nan.any():
        return values
    if policy == "error":
        parts = []
        for j in np.flatnonzero(nan.any(axis=0)):
            where = f", first at {_fmt(rows[nan[:, j]])}" if rows is not None else ""
            parts.append(f"column {short(cols[j])}: {int(nan[:, j].sum())} empty cells{where}")
        where = f" in series {short(label)}" if label else ""
        raise DataError(f"missing values{where}: " + "; ".join(parts) + ". Choose a policy: data.missing: "
                        "interpolate | ffill | drop-windows (CLI: --set data.missing=interpolate)")
    frame = pd.DataFrame(values)
    if policy == "interpolate":
        frame = frame.interpolate(method="linear", limit_direction="both")
    elif policy == "ffill":
        frame = frame.ffill().bfill()
    return frame.to_numpy()


def _sorted_unique(t: np.ndarray, vals: np.ndarray, rows: Rows, sid: str,
                   notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort rows by time, stably and logged (D4); refuse duplicated timestamps, naming both rows (D3)."""
    if not np.all(t[1:] >= t[:-1]):
        order = np.argsort(t, kind="stable")
        moved = int(np.count_nonzero(order != np.arange(len(order))))
        notes.append(f"{_label(sid)}: {moved} rows were not in time order; sorted them by time (stable sort)")
        log.info(notes[-1])
        t, vals, rows = t[order], vals[order], rows[order]
    dup = np.flatnonzero(t[1:] == t[:-1]) + 1
    if len(dup):
        label = f" in series {short(sid)}" if sid else ""
        pairs = [f"{stamp(t[k])} at {rows[k - 1]} and {rows[k]}" for k in dup[:_MAX_LISTED]]
        more = f" and {len(dup) - _MAX_LISTED} more" if len(dup) > _MAX_LISTED else ""
        raise DataError(f"{len(dup)} duplicated timestamps{label}: " + "; ".join(pairs) + more +
                        ". Each timestamp must appear once per series: remove or aggregate the duplicates "
                        "(lstmcast never merges them silently)")
    return t, vals, rows


def validate_frame(df: pd.DataFrame, cfg: DataConfig, precision: str = "fp32") -> SeriesSet:
    """Check every data invariant on a raw table and return float32 series on a regular grid.

    ``df`` as ``io.read_table`` returns it. The time column may hold dates or integer steps (see
    lstmcast.data.times); future_features are checked like features; static_features (long table)
    must be constant within each series (lstmcast.data.static).
    """
    check_freq(cfg.freq)
    time_col, targets, features = _check_columns(df, cfg)
    future = list(cfg.future_features)
    times, tz, integer_time = parse_times(df, cfg)
    cols = targets + features + future
    if cfg.id_col:
        _refuse_untrainable(df[cfg.id_col], cfg)
    try:
        numeric = {c: _numeric(df, c, precision, cfg.scaling) for c in cols}
        found = _validate_series(df, cfg, times, tz, numeric, targets, features + future)
    except DataError:  # only a failing table pays for the search: a forgotten --id-col explains it better (D3)
        refuse_hidden_series(df, cfg, times, cols + list(cfg.static_features))
        raise
    ids, layout = found[0], found[-1]
    if cfg.static_features and layout == "wide":
        raise DataError(f"data.static_features {cfg.static_features} need a long table (one series per id, "
                        "data.id_col): in a wide table every column is a series and a static column belongs to none")
    static = static_for(df, cfg, ids) if cfg.static_features else None
    return SeriesSet(ids=ids, times=found[1], values=found[2], targets=targets, features=features,
                     freq=found[3], time_col=time_col, id_col=cfg.id_col, layout=layout, tz=tz, notes=found[4],
                     future_features=future, static=static, integer_time=integer_time)


def _validate_series(df: pd.DataFrame, cfg: DataConfig, times: np.ndarray, tz: str | None,
                     numeric: dict[str, np.ndarray], targets: list[str], covariates: list[str]
                     ) -> tuple[list[str], list[np.ndarray], list[np.ndarray], str, list[str], str]:
    """(ids, times, values, freq, notes, layout): the whole-table pass for a long table where it can
    decide, else the per-series loop, which also explains what is wrong."""
    cols = targets + covariates
    if cfg.id_col:
        fast = validate_long(df, cfg, times, numeric, cols, tz)
        if fast is not None:
            return (*fast, "long")
    kind = df.attrs.get("row_kind", "row")
    df = df.assign(__t__=times)
    ids, parts, layout = _groups(df, cfg, targets)
    out_t, out_v, notes = [], [], []
    freq = None if cfg.freq is None else str(cfg.freq)
    if freq is None and layout == "long" and len(parts[0]) < 3:  # a short first series: the first long one sets it
        freq = _first_long_freq(ids, parts, cfg, numeric, cols, kind, tz)
    for i, (sid, part) in enumerate(zip(ids, parts)):
        whole = part is df  # single and wide layouts: no per-series row selection (no copy)
        idx = None if whole else part.index.to_numpy()
        series_cols = [sid] + covariates if layout == "wide" else cols
        vals = np.column_stack([numeric[c] if whole else numeric[c][idx] for c in series_cols]
                               ).astype(np.float64, copy=False)  # the per-series fill computes in float64
        rows = Rows(part["__row__"].to_numpy(), kind)
        t, vals, rows = _sorted_unique(part["__t__"].to_numpy(), vals, rows, sid, notes)
        n_rows = len(t)
        t, vals, freq_i = _regularise(t, vals, rows, cfg, sid, freq, tz)
        freq = freq if freq is not None else freq_i
        if i > 0 and freq_i != freq:
            raise DataError(f"series {short(sid)} has frequency {short(freq_i)} but {short(ids[0])} has "
                            f"{short(freq)}: all series "
                            "must share one frequency (set data.freq to resample-check them)")
        # rows name file lines; after gaps were inserted (only under a fill policy) they are not needed
        vals = _fill_missing(vals, series_cols, cfg.missing, sid, rows if len(t) == n_rows else None)
        out_t.append(t)
        out_v.append(vals.astype(np.float32))
    return ids, out_t, out_v, str(freq), notes, layout


def _first_long_freq(ids: list[str], parts: list[pd.DataFrame], cfg: DataConfig, numeric: dict[str, np.ndarray],
                     cols: list[str], kind: str, tz: str | None) -> str | None:
    """The frequency of the first series with at least 3 rows (a series of 1 or 2 rows cannot show its step),
    which every series of the table then shares; None if there is none (the loop explains)."""
    for sid, part in zip(ids, parts):
        if len(part) >= 3:
            idx = part.index.to_numpy()
            vals = np.column_stack([numeric[c][idx] for c in cols]).astype(np.float64, copy=False)
            t, vals, rows = _sorted_unique(part["__t__"].to_numpy(), vals, Rows(part["__row__"].to_numpy(), kind),
                                           sid, [])
            return _regularise(t, vals, rows, cfg, sid, None, tz)[2]
    return None


def _refuse_untrainable(ids: pd.Series, cfg: DataConfig) -> None:
    """Issue 21 item 15: a long table none of whose series can hold one training window is refused from row
    counts (one factorize, ~0.1 s at a million rows) before the per-series checks (minutes and gigabytes at a
    million one-row series). Without a fill policy rows are points; with one, gaps could add points, so only
    series of one row are sure to stay short."""
    import pandas as pd

    codes, uniques = pd.factorize(ids, sort=False)
    if not len(uniques) or (codes < 0).any():
        return  # empty ids: the loop names their rows
    counts = np.bincount(codes, minlength=len(uniques))
    sure = counts if cfg.missing == "error" else np.where(counts < 2, counts, np.iinfo(np.int64).max)
    if sure.max() < min_train_points(cfg.horizon):
        raise no_trainable_series(uniques, counts, cfg.horizon)  # ids read lazily: only the one named
