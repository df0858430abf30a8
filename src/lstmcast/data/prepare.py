"""From validated series to what training needs: window/season resolved, splits, scalers, one tensor."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from . import scaling
from .validate import SeriesSet
from .inputs import InputSpec, calendar_block, fit_inputs, static_table
from .windows import Roles, Split, WindowIndex, build_index, split_points

log = logging.getLogger(__name__)
_FP16_MAX = 65504.0

# seasonal period (steps per cycle) for the common pandas frequency aliases
_SEASONS = {"min": 1440, "t": 1440, "h": 24, "d": 7, "b": 5, "w": 52, "m": 12, "ms": 12, "me": 12,
            "sm": 24, "sms": 24, "q": 4, "qs": 4, "qe": 4, "bm": 12, "bms": 12, "bme": 12}


def season_from_freq(freq: int | str) -> int | None:
    """Steps per natural cycle: hourly -> 24 (a day), daily -> 7, weekly -> 52, monthly -> 12, ...;
    None for integer time (freq 1 or "1", as data.freq may hold it: no natural cycle; set data.season)."""
    if not isinstance(freq, str):
        return None
    m = re.fullmatch(r"(\d*)([A-Za-z]+)(-\w+)?", freq.strip())
    if not m:
        return None
    n = int(m.group(1) or 1)
    unit = m.group(2).lower()
    base = _SEASONS.get(unit)
    if base is None or base % n:
        return None
    season = base // n
    return season if season > 1 else None


def auto_window(season: int | None, horizon: int) -> int:
    if season and season > 1:
        return int(min(max(2 * season, 2 * horizon), 512))
    return int(max(4 * horizon, 16))


@dataclass
class Prepared:
    series: SeriesSet
    window: int
    horizon: int
    season: int | None
    splits: list[Split]
    means: np.ndarray  # (S, C)
    stds: np.ndarray  # (S, C)
    scaled: np.ndarray  # (N_total, C) float32, all series concatenated
    index: WindowIndex
    constant: list[str]
    inputs: InputSpec = field(default_factory=InputSpec)  # known-future channels and statics (data/inputs.py)
    statics: np.ndarray | None = None  # (S, static inputs) float32, None when the model takes none

    @property
    def roles(self) -> Roles:
        return Roles(self.window, self.horizon, self.series.n_targets,
                     tuple(range(self.scaled.shape[1] - self.inputs.future_size, self.scaled.shape[1])))

    def row_series(self) -> np.ndarray:
        """(N_rows,) the series each row of ``scaled`` belongs to."""
        return np.repeat(np.arange(len(self.series.ids)), np.diff(self.index.offsets))


def _too_short(label: str, sp: Split, window: int | str, horizon: int) -> DataError:
    """D8: say the required and the actual lengths, and what to reduce."""
    held = sp.n - sp.train_end
    need = f"window + horizon = {window} + {horizon} = {window + horizon}" if isinstance(window, int) \
        else f"a window of >= 2 + horizon {horizon} + a few windows to train on"
    total = f" (at least {window + horizon + held} in all)" if isinstance(window, int) else ""
    return DataError(
        f"{label} is too short: it has {sp.n} points; validation and test take the last {held} (the test at "
        f"least one horizon, validation at least data.min_val_horizons), leaving {max(sp.train_end, 0)} training points, but {need} are needed for one "
        f"training window{total}: reduce data.window or data.horizon, lower data.val_fraction / "
        "data.test_fraction / data.min_val_horizons, or use a longer series")


def _fit_window(cfg: DataConfig, series: SeriesSet, splits: list[Split], season: int | None) -> int:
    H = cfg.horizon
    shortest = min(range(len(splits)), key=lambda i: splits[i].train_end)
    sp, name = splits[shortest], series.ids[shortest]
    label = f"series {name!r}" if name else "the series"
    if cfg.window is not None:
        if sp.train_end < cfg.window + H:
            raise _too_short(label, sp, cfg.window, H)
        return cfg.window
    window = auto_window(season, H)
    fits = sp.train_end - H - max(1, sp.train_end // 4)
    if window > fits:
        if fits < 2:
            raise _too_short(label, sp, "auto", H)
        log.info("auto window %d does not fit %s; using %d", window, label, fits)
        window = fits
    return window


def check_fp16_range(scaled: list[np.ndarray], series: SeriesSet, scaling: str) -> None:
    """D10: what enters an fp16 model must fit float16 (|x| <= 65504), checked before training."""
    from .grid import stamp

    for sid, times, vals in zip(series.ids, series.times, scaled):
        big = np.abs(np.nan_to_num(vals)) > _FP16_MAX
        if big.any():
            row, col = np.argwhere(big)[0]
            label = f"series {sid!r}" if sid else "the series"
            raise DataError(
                f"{int(big.sum())} values of {label} exceed the float16 range (|x| > 65504) after scaling, first "
                f"in column {series.channel_names[col]!r} at {stamp(times[row])}, and train.precision is "
                "fp16: use train.precision bf16 or fp32" + (", or data.scaling: standard" if scaling == "none" else
                                                            " (or remove the outliers)"))


def prepare(series: SeriesSet, cfg: DataConfig, precision: str = "fp32", id_embedding: bool = False) -> Prepared:
    """Resolve window and season, split by time, fit scalers on train only, add the calendar channels,
    encode the statics, build the window index."""
    H = cfg.horizon
    splits = [split_points(len(v), H, cfg.val_fraction, cfg.test_fraction, cfg.min_val_horizons)
              for v in series.values]
    season = cfg.season if cfg.season is not None else season_from_freq(series.freq)
    window = _fit_window(cfg, series, splits, season)
    S, C = len(series.values), len(series.channel_names)
    if cfg.scaling == "standard":
        means, stds, flat = scaling.fit_scalers(series.values, [sp.train_end for sp in splits])
    else:
        means, stds, flat = np.zeros((S, C)), np.ones((S, C)), []
    sids = series.ids
    constant = [series.channel_names[j] + (f" of series {sids[i]!r}" if sids[i] else "") for i, j in flat]
    scaled = []
    for i, vals in enumerate(series.values):
        scaled.append(scaling.transform(vals, means[i], stds[i]))
        if not np.isfinite(scaled[-1]).all():  # a NaN the data kept, or D14: an overflow, refused naming rows
            scaling.check_overflow(vals, scaled[-1], series.channel_names, series.times[i],
                                   f"series {sids[i]!r}" if sids[i] else "the series")
    if precision == "fp16":
        check_fp16_range(scaled, series, cfg.scaling)
    inputs = fit_inputs(series, cfg, id_embedding)
    if inputs.calendar:  # known for every step, past and future: derived from the timestamps, never scaled
        scaled = [np.concatenate([s, calendar_block(inputs, t, series.tz)], axis=1)
                  for s, t in zip(scaled, series.times)]
    if constant:
        log.warning("constant columns (std 0 on the training split) scaled with std 1 (no division by zero): %s;"
                    " a constant input carries no signal: drop it from data.features or check the data",
                    ", ".join(constant))
    finite = [np.isfinite(s).all(axis=1) for s in scaled] if cfg.missing == "drop-windows" else None
    index = build_index([len(s) for s in scaled], splits, window, H, finite)
    if len(index.train) == 0:
        raise DataError(f"no complete training window of window + horizon = {window + H} points exists"
                        " (missing values break every one): use data.missing: interpolate or a shorter window")
    if len(index.val) == 0:
        raise DataError(f"no complete validation window of {window + H} points: lower data.window or "
                        "data.horizon, raise data.val_fraction, or fill missing values")
    return Prepared(series=series, window=window, horizon=H, season=season, splits=splits,
                    means=means, stds=stds, scaled=np.concatenate(scaled),
                    index=index, constant=constant, inputs=inputs,
                    statics=static_table(inputs, series.static, series.ids))
