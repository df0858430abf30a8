"""The data invariants (FAULTS.md D1-D12): a raw table in, validated float32 series out.

Invariants of a :class:`SeriesSet` (what every later stage may rely on):
- each series has strictly increasing timestamps on one regular grid of step ``freq``;
- values are float32, targets first then features, finite except NaN under ``missing: drop-windows``;
- no duplicated timestamps, no text, no inf; columns as named in the config.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, DataError, did_you_mean, plain
from .grid import MAX_LISTED as _MAX_LISTED
from .grid import fmt as _fmt
from .grid import label as _label
from .grid import regularise_zoned as _regularise
from .io import row_name

if TYPE_CHECKING:
    import pandas as pd

    from ..config import DataConfig

log = logging.getLogger(__name__)
_FP16_MAX = 65504.0
_F32_MAX = float(np.finfo(np.float32).max)
TIME_RANGE = (np.datetime64("1677-09-22", "D"), np.datetime64("2262-04-11", "D"))
_TZ_RE = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


@dataclass
class SeriesSet:
    """Validated series, one entry per series; values are (N_i, T + F) float32, targets first."""

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

    @property
    def n_targets(self) -> int:
        """Channels predicted per series: T (1 in wide layout, where each target column is a series)."""
        return 1 if self.layout == "wide" else len(self.targets)

    @property
    def channel_names(self) -> list[str]:
        """Names of the value channels of each series: targets first, then features."""
        return (["value"] if self.layout == "wide" else self.targets) + self.features

    def lengths(self) -> list[int]:
        return [len(v) for v in self.values]


class Rows:
    """Where each row of a series came from (see ``io.read_table``), named only for error messages."""

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


def _table_rows(df: pd.DataFrame) -> Rows:
    return Rows(df["__row__"].to_numpy(), df.attrs.get("row_kind", "row"))


def _rows(df: pd.DataFrame, mask: np.ndarray) -> str:
    return _fmt(_table_rows(df)[np.asarray(mask)])


def _check_columns(df: pd.DataFrame, cfg: DataConfig) -> tuple[str, list[str], list[str]]:
    origin = df.attrs.get("origin", "the data")
    cols = [c for c in df.columns if c != "__row__"]
    listed = ", ".join(repr(c) for c in cols)
    if cfg.time_col is None:
        raise DataError(f"no time column given: set --time-col / data.time_col to one of {listed}")
    roles = [("data.time_col", cfg.time_col)] + [("data.target", t) for t in cfg.target]
    roles += [("data.features", f) for f in cfg.features]
    if cfg.id_col:
        roles.append(("data.id_col", cfg.id_col))
    missing = [f"{key} {name!r} is not a column of {origin}{did_you_mean(name, cols)}"
               for key, name in roles if name not in cols]
    if missing:
        raise DataError("; ".join(missing) + f". Columns present: {listed}")
    targets = list(cfg.target)
    if not targets:
        used = {cfg.time_col, cfg.id_col, *cfg.features}
        candidates = [c for c in cols if c not in used]
        if cfg.format == "wide" and candidates:  # wide: every other column is a series
            log.info("wide format: %d series columns %s", len(candidates), candidates[:10])
            return cfg.time_col, candidates, list(cfg.features)
        if len(candidates) != 1:
            raise DataError(f"no target column given: set --target / data.target to one or more of "
                            f"{', '.join(repr(c) for c in candidates)}")
        targets = candidates
        log.info("using the only value column %r as the target", targets[0])
    return cfg.time_col, targets, list(cfg.features)


def _parse_times(df: pd.DataFrame, cfg: DataConfig) -> tuple[np.ndarray, str | None]:
    """Timestamps as UTC-naive datetime64[ns] plus the time zone they came in (None if naive), D7."""
    import pandas as pd

    raw = df[cfg.time_col]
    if raw.isna().any():
        raise DataError(f"time column {cfg.time_col!r} has empty cells at {_rows(df, raw.isna().to_numpy())}: "
                        "every row needs a timestamp")
    if pd.api.types.is_datetime64_any_dtype(raw):  # already parsed (DataFrame or Parquet): keep its zone
        parsed = raw.dt.tz_convert("UTC") if cfg.utc and raw.dt.tz is not None else raw
    elif pd.api.types.is_numeric_dtype(raw):
        raise DataError(f"time column {cfg.time_col!r} holds numbers, not timestamps (first {plain(raw.iloc[0])}): "
                        "give dates/times, e.g. 2024-01-31 or 2024-01-31T13:00")
    else:
        parsed = _parse_text_times(df, cfg)
    tz = None
    if getattr(parsed.dt, "tz", None) is not None:
        tz = str(parsed.dt.tz)
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    _check_time_range(df, cfg.time_col, parsed.to_numpy())
    return parsed.to_numpy(dtype="datetime64[ns]"), tz


def _check_time_range(df: pd.DataFrame, col: str, times: np.ndarray) -> None:
    """D15: lstmcast's grid is in nanoseconds; a timestamp outside that range would wrap (1500 -> 2084)."""
    import pandas as pd

    lo, hi = TIME_RANGE  # whole days inside pandas' limits (numpy wraps converting the exact ones)
    bad = (times < lo) | (times > hi)
    if bad.any():
        raise DataError(f"time column {col!r} has {int(bad.sum())} timestamps outside the supported range "
                        f"{lo} to {hi} (pandas nanosecond timestamps), first "
                        f"{pd.Timestamp(times[bad][0]).isoformat()} at {_rows(df, bad)}: shift or re-date the series "
                        "into that range")


def _parse_text_times(df: pd.DataFrame, cfg: DataConfig) -> pd.Series:
    import pandas as pd

    text = df[cfg.time_col].astype(str).str.strip()
    hint = "set data.time_format (e.g. '%Y-%m-%d %H:%M') to the format of the column"
    if not cfg.utc:
        offsets = text.str.extract(_TZ_RE, expand=False).fillna("none")
        offsets = offsets.str.replace("Z", "+00:00", regex=False).str.replace(r"(\d\d)(\d\d)$", r"\1:\2", regex=True)
        if offsets.nunique() > 1:
            first = offsets.iloc[0]
            bad = (offsets != first).to_numpy()
            raise DataError(f"time column {cfg.time_col!r} mixes time zones ({first} at {_table_rows(df)[0]}, "
                            f"{offsets[bad].iloc[0]} at {_rows(df, bad)}): set data.utc: true (CLI: --set "
                            "data.utc=true) to convert all timestamps to UTC")
    try:
        parsed = pd.to_datetime(text, format=cfg.time_format, utc=cfg.utc, errors="coerce")
    except (ValueError, TypeError) as exc:
        raise DataError(f"time column {cfg.time_col!r} cannot be parsed ({exc}): {hint}") from None
    bad = parsed.isna().to_numpy()
    if bad.any():
        first = text[bad].iloc[0]
        raise DataError(f"time column {cfg.time_col!r}: {int(bad.sum())} unparseable timestamps, first "
                        f"{first!r} at {_rows(df, bad)}: fix those rows or {hint}")
    return parsed


def _numeric(df: pd.DataFrame, col: str, precision: str, scaling: str = "none") -> np.ndarray:
    import pandas as pd

    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = (num.isna() & raw.notna()).to_numpy()
    if isinstance(raw.dtype, pd.StringDtype) or raw.dtype == object:
        bad = bad & raw.astype(str).str.strip().ne("").to_numpy()
    if bad.any():
        value = raw[bad].iloc[0]
        raise DataError(f"column {col!r} must be numeric but holds text: {value!r} at {_rows(df, bad)} "
                        f"({int(bad.sum())} cells): fix or blank those cells")
    values = num.to_numpy(dtype=np.float64)
    inf = np.isinf(values)
    if inf.any():
        raise DataError(f"column {col!r} holds {int(inf.sum())} infinite values at {_rows(df, inf)}: "
                        "replace them (inf cannot be scaled or learned)")
    big = np.abs(values) > _F32_MAX  # finite in float64, inf once cast to float32 (D14); NaN compares False
    if big.any():
        raise DataError(f"column {col!r} holds {int(big.sum())} values beyond the float32 range (|x| > 3.4e38) "
                        f"at {_rows(df, big)}, first {plain(values[big][0])}: lstmcast computes in float32; "
                        "fix those cells or rescale the column (e.g. divide it by a power of ten)")
    if precision == "fp16" and scaling == "none":  # scaled values are checked in prepare
        big = np.abs(np.nan_to_num(values)) > _FP16_MAX
        if big.any():
            raise DataError(f"column {col!r} has values beyond the float16 range (|x| > 65504) at "
                            f"{_rows(df, big)}, data.scaling is 'none' and train.precision is fp16: use "
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
            raise DataError(f"series id column {cfg.id_col!r} has {int(empty.sum())} empty cells at "
                            f"{_rows(df, empty)}: every row must name its series")
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
            parts.append(f"column {cols[j]!r}: {int(nan[:, j].sum())} empty cells{where}")
        where = f" in series {label!r}" if label else ""
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
    import pandas as pd

    if not np.all(t[1:] >= t[:-1]):
        order = np.argsort(t, kind="stable")
        moved = int(np.count_nonzero(order != np.arange(len(order))))
        notes.append(f"{_label(sid)}: {moved} rows were not in time order; sorted them by time (stable sort)")
        log.info(notes[-1])
        t, vals, rows = t[order], vals[order], rows[order]
    dup = np.flatnonzero(t[1:] == t[:-1]) + 1
    if len(dup):
        label = f" in series {sid!r}" if sid else ""
        pairs = [f"{pd.Timestamp(t[k])} at {rows[k - 1]} and {rows[k]}" for k in dup[:_MAX_LISTED]]
        more = f" and {len(dup) - _MAX_LISTED} more" if len(dup) > _MAX_LISTED else ""
        raise DataError(f"{len(dup)} duplicated timestamps{label}: " + "; ".join(pairs) + more +
                        ". Each timestamp must appear once per series: remove or aggregate the duplicates "
                        "(lstmcast never merges them silently)")
    return t, vals, rows


def _check_freq(freq: str | None) -> None:
    import pandas as pd

    if freq is None:
        return
    try:
        pd.tseries.frequencies.to_offset(freq)
    except ValueError:
        raise ConfigError(f"data.freq {freq!r} is not a pandas frequency: use e.g. 'h' (hourly), '15min', 'D', "
                          "'W-SUN', 'MS' (month start)") from None


def validate_frame(df: pd.DataFrame, cfg: DataConfig, precision: str = "fp32") -> SeriesSet:
    """Check every data invariant on a raw table and return float32 series on a regular grid."""
    _check_freq(cfg.freq)
    time_col, targets, features = _check_columns(df, cfg)
    times, tz = _parse_times(df, cfg)
    cols = targets + features
    numeric = {c: _numeric(df, c, precision, cfg.scaling) for c in cols}
    if cfg.id_col:  # a long table: whole-table passes, or None where the loop below must explain
        from .longtable import validate_long

        fast = validate_long(df, cfg, times, numeric, cols, tz)
        if fast is not None:
            ids, out_t, out_v, freq, notes = fast
            return SeriesSet(ids=ids, times=out_t, values=out_v, targets=targets, features=features, freq=freq,
                             time_col=time_col, id_col=cfg.id_col, layout="long", tz=tz, notes=notes)
    kind = df.attrs.get("row_kind", "row")
    df = df.assign(__t__=times)
    ids, parts, layout = _groups(df, cfg, targets)
    out_t, out_v, freq, notes = [], [], cfg.freq, []
    for i, (sid, part) in enumerate(zip(ids, parts)):
        whole = part is df  # single and wide layouts: no per-series row selection (no copy)
        idx = None if whole else part.index.to_numpy()
        series_cols = [sid] + features if layout == "wide" else cols
        vals = np.column_stack([numeric[c] if whole else numeric[c][idx] for c in series_cols])
        rows = Rows(part["__row__"].to_numpy(), kind)
        t, vals, rows = _sorted_unique(part["__t__"].to_numpy(), vals, rows, sid, notes)
        n_rows = len(t)
        t, vals, freq_i = _regularise(t, vals, rows, cfg, sid, freq, tz)
        freq = freq if freq is not None else freq_i
        if i > 0 and freq_i != freq:
            raise DataError(f"series {sid!r} has frequency {freq_i!r} but {ids[0]!r} has {freq!r}: all series "
                            "must share one frequency (set data.freq to resample-check them)")
        # rows name file lines; after gaps were inserted (only under a fill policy) they are not needed
        vals = _fill_missing(vals, series_cols, cfg.missing, sid, rows if len(t) == n_rows else None)
        out_t.append(t)
        out_v.append(vals.astype(np.float32))
    return SeriesSet(ids=ids, times=out_t, values=out_v, targets=targets,
                     features=features, freq=str(freq), time_col=time_col, id_col=cfg.id_col,
                     layout=layout, tz=tz, notes=notes)
