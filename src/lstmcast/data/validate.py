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

from ..errors import DataError, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

    from ..config import DataConfig

log = logging.getLogger(__name__)
_MAX_LISTED = 5
_FP16_MAX = 65504.0
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


def _rows(df: pd.DataFrame, mask: np.ndarray) -> str:
    rows = df["__row__"].to_numpy()[np.asarray(mask)]
    shown = ", ".join(str(r) for r in rows[:_MAX_LISTED])
    return shown + (f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else "")


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
        if len(candidates) != 1:
            raise DataError(f"no target column given: set --target / data.target to one or more of "
                            f"{', '.join(repr(c) for c in candidates)}")
        targets = candidates
        log.info("using the only value column %r as the target", targets[0])
    return cfg.time_col, targets, list(cfg.features)


def _parse_times(df: pd.DataFrame, cfg: DataConfig) -> tuple[np.ndarray, str | None]:
    import pandas as pd

    raw = df[cfg.time_col]
    hint = "set data.time_format (e.g. '%Y-%m-%d %H:%M') to the format of the column"
    if raw.isna().any():
        raise DataError(f"time column {cfg.time_col!r} has empty cells at {_rows(df, raw.isna().to_numpy())}: "
                        "every row needs a timestamp")
    if pd.api.types.is_numeric_dtype(raw):
        raise DataError(f"time column {cfg.time_col!r} holds numbers, not timestamps (first {raw.iloc[0]!r}): "
                        "give dates/times, e.g. 2024-01-31 or 2024-01-31T13:00")
    text = raw.astype(str)
    if not cfg.utc:
        offsets = text.str.extract(_TZ_RE, expand=False).fillna("none")
        if offsets.nunique() > 1:
            first = offsets.iloc[0]
            bad = (offsets != first).to_numpy()
            raise DataError(f"time column {cfg.time_col!r} mixes time zones ({offsets.iloc[0]} at "
                            f"{df['__row__'].iloc[0]}, {offsets[bad].iloc[0]} at {_rows(df, bad)}): "
                            "set data.utc: true to convert all timestamps to UTC")
    try:
        parsed = pd.to_datetime(text, format=cfg.time_format, utc=cfg.utc, errors="coerce")
    except (ValueError, TypeError) as exc:
        raise DataError(f"time column {cfg.time_col!r} cannot be parsed ({exc}): {hint}") from None
    bad = parsed.isna().to_numpy()
    if bad.any():
        first = text[bad].iloc[0]
        raise DataError(f"time column {cfg.time_col!r}: {int(bad.sum())} unparseable timestamps, first "
                        f"{first!r} at {_rows(df, bad)}: fix those rows or {hint}")
    tz = None
    if getattr(parsed.dt, "tz", None) is not None:
        tz = str(parsed.dt.tz)
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.to_numpy(dtype="datetime64[ns]"), tz


def _numeric(df: pd.DataFrame, col: str, precision: str) -> np.ndarray:
    import pandas as pd

    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = (num.isna() & raw.notna()).to_numpy()
    if isinstance(raw.dtype, pd.StringDtype) or raw.dtype == object:
        bad &= raw.astype(str).str.strip().ne("").to_numpy()
    if bad.any():
        value = raw[bad].iloc[0]
        raise DataError(f"column {col!r} must be numeric but holds text: {value!r} at {_rows(df, bad)} "
                        f"({int(bad.sum())} cells): fix or blank those cells")
    values = num.to_numpy(dtype=np.float64)
    inf = np.isinf(values)
    if inf.any():
        raise DataError(f"column {col!r} holds {int(inf.sum())} infinite values at {_rows(df, inf)}: "
                        "replace them (inf cannot be scaled or learned)")
    if precision == "fp16":
        big = np.abs(np.nan_to_num(values)) > _FP16_MAX
        if big.any():
            raise DataError(f"column {col!r} has values beyond the float16 range (|x| > 65504) at "
                            f"{_rows(df, big)} and train.precision is fp16: use precision bf16 or fp32")
    return values


def _groups(df: pd.DataFrame, cfg: DataConfig, targets: list[str]) -> tuple[list[str], list[pd.DataFrame], str]:
    if cfg.id_col:
        ids, parts = [], []
        for key, part in df.groupby(cfg.id_col, sort=True, dropna=False):
            ids.append(str(key))
            parts.append(part)
        return ids, parts, "long"
    if cfg.format == "wide" and len(targets) > 1:
        return list(targets), [df] * len(targets), "wide"
    if cfg.format == "long":
        raise DataError("data.format is 'long' but no data.id_col was given: name the series id column")
    return [""], [df], "single"


def _regularise(times: np.ndarray, values: np.ndarray, rows: np.ndarray, cfg: DataConfig,
                name: str, freq: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    import pandas as pd

    label = f"series {name!r}" if name else "the series"
    if len(times) < 3:
        raise DataError(f"{label} has {len(times)} rows; a forecaster needs many more (at least window + horizon)")
    if freq is None:
        freq = pd.infer_freq(pd.DatetimeIndex(times))
    if freq is None:
        steps = np.diff(times)
        uniq, counts = np.unique(steps, return_counts=True)
        step = uniq[np.argmax(counts)]
        if not np.all(steps % step == np.timedelta64(0)):
            shown = ", ".join(str(pd.Timedelta(s)) for s in uniq[np.argsort(-counts)][:_MAX_LISTED])
            raise DataError(f"{label} is not on a regular time grid: observed steps {shown}. Set data.freq "
                            "(e.g. 'h', 'D', 'W-SAT', 'MS') or resample the data to one frequency")
        freq = pd.tseries.frequencies.to_offset(pd.Timedelta(step)).freqstr
    grid = pd.date_range(times[0], times[-1], freq=freq).to_numpy(dtype="datetime64[ns]")
    on_grid = np.isin(times, grid)
    if not on_grid.all():
        raise DataError(f"{label}: timestamps {_fmt(times[~on_grid])} (at {_fmt(rows[~on_grid])}) are off the "
                        f"{freq!r} grid starting {times[0]}: fix data.freq or resample the data")
    if len(grid) != len(times):
        gaps = grid[~np.isin(grid, times)]
        if cfg.missing == "error":
            raise DataError(f"{label} has {len(gaps)} missing timestamps (gaps) on the {freq!r} grid, first "
                            f"{_fmt(gaps)}: set data.missing to interpolate, ffill or drop-windows to fill "
                            "them explicitly, or add the rows")
        full = np.full((len(grid), values.shape[1]), np.nan)
        full[np.searchsorted(grid, times)] = values
        times, values = grid, full
    return times, values, freq


def _fmt(arr: np.ndarray) -> str:
    shown = ", ".join(str(a) for a in arr[:_MAX_LISTED])
    return shown + (f" and {len(arr) - _MAX_LISTED} more" if len(arr) > _MAX_LISTED else "")


def _fill_missing(values: np.ndarray, cols: list[str], policy: str, label: str, rows: np.ndarray) -> np.ndarray:
    import pandas as pd

    nan = np.isnan(values)
    if not nan.any():
        return values
    if policy == "error":
        parts = []
        for j in np.flatnonzero(nan.any(axis=0)):
            parts.append(f"column {cols[j]!r}: {int(nan[:, j].sum())} empty cells, first at {_fmt(rows[nan[:, j]])}")
        where = f" in series {label!r}" if label else ""
        raise DataError(f"missing values{where}: " + "; ".join(parts) + ". Choose a policy: data.missing: "
                        "interpolate | ffill | drop-windows (CLI: --set data.missing=interpolate)")
    frame = pd.DataFrame(values)
    if policy == "interpolate":
        frame = frame.interpolate(method="linear", limit_direction="both")
    elif policy == "ffill":
        frame = frame.ffill().bfill()
    return frame.to_numpy()


def validate_frame(df: pd.DataFrame, cfg: DataConfig, precision: str = "fp32") -> SeriesSet:
    """Check every data invariant on a raw table and return float32 series on a regular grid."""
    time_col, targets, features = _check_columns(df, cfg)
    times, tz = _parse_times(df, cfg)
    cols = targets + features
    numeric = {c: _numeric(df, c, precision) for c in cols}
    df = df.assign(__t__=times)
    ids, parts, layout = _groups(df, cfg, targets)
    out_t, out_v, freq, notes = [], [], cfg.freq, []
    for i, (sid, part) in enumerate(zip(ids, parts)):
        idx = part.index.to_numpy()
        series_cols = [sid] + features if layout == "wide" else cols
        vals = np.column_stack([numeric[c][idx] for c in series_cols])
        t = part["__t__"].to_numpy()
        rows = part["__row__"].to_numpy()
        order = np.argsort(t, kind="stable")
        if not np.all(order == np.arange(len(order))):
            notes.append(f"series {sid!r}: rows were not in time order; sorted them (stable)")
            log.info(notes[-1])
            t, vals, rows = t[order], vals[order], rows[order]
        dup = np.concatenate([[False], t[1:] == t[:-1]])
        if dup.any():
            label = f" in series {sid!r}" if sid else ""
            raise DataError(f"duplicated timestamps{label}: {_fmt(t[dup])} at {_fmt(rows[dup])}; each timestamp "
                            "must appear once per series: remove or aggregate the duplicates")
        row_grid = rows
        t, vals, freq_i = _regularise(t, vals, rows, cfg, sid, freq)
        if len(row_grid) != len(t):
            row_grid = np.array([f"{tt} (inserted)" for tt in t], dtype=object)
            row_grid[np.searchsorted(t, part["__t__"].to_numpy()[order])] = rows
        freq = freq if freq is not None else freq_i
        if i > 0 and freq_i != freq:
            raise DataError(f"series {sid!r} has frequency {freq_i!r} but {ids[0]!r} has {freq!r}: all series "
                            "must share one frequency (set data.freq to resample-check them)")
        vals = _fill_missing(vals, series_cols, cfg.missing, sid, row_grid)
        out_t.append(t)
        out_v.append(vals.astype(np.float32))
    return SeriesSet(ids=ids, times=out_t, values=out_v, targets=targets,
                     features=features, freq=str(freq), time_col=time_col, id_col=cfg.id_col,
                     layout=layout, tz=tz, notes=notes)
