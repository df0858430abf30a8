"""From validated series to what training needs: window/season resolved, splits, scalers, one tensor."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..config import DataConfig
from ..errors import DataError, short
from . import scaling, transform
from .calendar import future_times
from .grid import stamp
from .inputs import InputSpec, calendar_block, fit_inputs, static_table
from .validate import SeriesSet
from .windows import (
    Roles,
    Split,
    WindowIndex,
    build_index,
    min_train_points,
    no_trainable_series,
    pad_for,
    split_points,
)

log = logging.getLogger(__name__)
Scaling = Literal["standard", "diff", "none"]  # data.scaling resolved (never auto)
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
    # a table with series shorter than a window: each such series' rows in ``scaled`` start with pads[i] copies
    # of its first row, and a mask channel (1 real, 0 padding) follows the past-only channels (mask_channel)
    pads: list[int] | None = None
    mask_channel: bool = False
    scaling_kind: Scaling = "standard"  # data.scaling resolved (scaling_how): how a new series at predict is scaled

    @property
    def roles(self) -> Roles:
        return Roles(self.window, self.horizon, self.series.n_targets,
                     tuple(range(self.scaled.shape[1] - self.inputs.future_size, self.scaled.shape[1])))

    def pad_of(self, i: int) -> int:
        return self.pads[i] if self.pads is not None else 0

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
        f"least one horizon, validation at least data.min_val_horizons), leaving {max(sp.train_end, 0)} training "
        f"points, but {need} are needed for one "
        f"training window{total}: reduce data.window or data.horizon, lower data.val_fraction / "
        "data.test_fraction / data.min_val_horizons, or use a longer series")


def _fit_window(cfg: DataConfig, series: SeriesSet, splits: list[Split], season: int | None) -> int:
    H = cfg.horizon
    shortest = min(range(len(splits)), key=lambda i: splits[i].train_end)
    sp, name = splits[shortest], series.ids[shortest]
    label = f"series {short(name)}" if name else "the series"
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


def is_panel(layout: str, n_series: int) -> bool:
    """A table of several series (long or wide): short series are padded, the split bends (issue 20). A long
    table of one id is one series, and trains exactly as the plain table of it does."""
    return layout != "single" and n_series > 1


def split_how(cfg: DataConfig, panel: bool) -> str:
    """data.split resolved: ``auto`` is the fractional split for one series and the last horizon for a table of
    many (README "Panels of short series" says why)."""
    if cfg.split != "auto":
        return cfg.split
    return "last-horizon" if panel else "fraction"


def scaling_how(cfg: DataConfig, panel: bool, season: int | None) -> Scaling:
    """data.scaling resolved: ``auto`` is ``diff`` for a table of many seasonal series, else ``standard``.

    Measured on the panels benchmark's 60-series samples (README "Panels of short series"): dividing by the
    mean seasonal change instead of the std weighs the pooled loss (and the linear skip's ridge fit) as MASE
    weighs the series, where a trend inflates a series' std and shrinks its weight; it lowered MASE on Tourism
    quarterly and M1 monthly / quarterly, and raised it on both yearly subsets (lag 1: the change there is
    mostly the trend itself), so season 1 keeps the std."""
    if cfg.scaling != "auto":
        return cfg.scaling
    return "diff" if panel and season is not None and season > 1 else "standard"


def series_splits(lengths: list[int], cfg: DataConfig, panel: bool) -> list[Split]:
    """Every series' split as training makes it: one series keeps its split (too short: D8); in a table of
    many a short series trains on what validation and test cannot take (windows.split_points, flexible)."""
    how, flexible = split_how(cfg, panel), panel
    return [split_points(n, cfg.horizon, cfg.val_fraction, cfg.test_fraction, cfg.min_val_horizons, how, flexible)
            for n in lengths]


def _panel_window(cfg: DataConfig, series: SeriesSet, splits: list[Split], season: int | None) -> int:
    """Many series: the automatic window (two seasons or horizons) capped at the window + horizon the median
    trainable series holds, so at least half of them train on whole windows (shorter ones are left-padded), but
    never under two horizons. Never sized from the shortest series (one short series would shrink everyone's
    window). Measured (60-series samples, MASE): M1 yearly window 3 (the median cap alone) 4.12, 12 (2H) 3.50,
    24 (auto) 3.56; M1 monthly 12 -> 1.39, 36 -> 1.22; Tourism yearly 11 (the cap) 2.95, 16 (auto) 3.45. Seasonal
    series get at least three horizons (six seasons on Tourism): 2H -> 3H measured Tourism monthly 1.441 -> 1.383,
    quarterly 1.454 -> 1.437, M1 quarterly 1.734 -> 1.670, M1 monthly 1.138 -> 1.136; on the yearly subsets 3H
    was worse (Tourism 2.774 -> 2.894, M1 3.500 -> 3.552), so season 1 keeps two horizons."""
    H = cfg.horizon
    room = np.array([sp.train_end for sp in splits], dtype=np.int64)
    trainable = room >= min_train_points(H)
    if not trainable.any():
        raise no_trainable_series(series.ids, [sp.n for sp in splits], H)
    if cfg.window is not None:
        return cfg.window
    floor = 3 * H if season and season > 1 else 2 * H
    return int(max(2, floor, min(auto_window(season, H), int(np.median(room[trainable])) - H)))


def check_fp16_range(scaled: list[np.ndarray], series: SeriesSet, scaling: str) -> None:
    """D10: what enters an fp16 model must fit float16 (|x| <= 65504), checked before training."""
    for sid, times, vals in zip(series.ids, series.times, scaled):
        big = np.abs(np.nan_to_num(vals)) > _FP16_MAX
        if big.any():
            row, col = np.argwhere(big)[0]
            label = f"series {short(sid)}" if sid else "the series"
            raise DataError(
                f"{int(big.sum())} values of {label} exceed the float16 range (|x| > 65504) after scaling, first "
                f"in column {short(series.channel_names[col])} at {stamp(times[row])}, and train.precision is "
                "fp16: use train.precision bf16 or fp32" + (", or data.scaling: standard" if scaling == "none" else
                                                            " (or remove the outliers)"))


def check_forecast_fits(series: SeriesSet, horizon: int) -> None:
    """The forecast after the latest series end must be representable (integer time up to 2**63-1, timestamps
    up to 2262-04-11): a DataError (exit 3) before training, not after it, and not again on every --resume."""
    if not series.times or not all(len(t) for t in series.times):
        return  # empty series are refused elsewhere, with their own message
    last = max(t[-1] for t in series.times)
    future_times(last, series.freq, horizon, series.integer_time, series.tz)


def prepare(series: SeriesSet, cfg: DataConfig, precision: str = "fp32", id_embedding: bool = False) -> Prepared:
    """Resolve window and season, split by time, fit scalers on train only, add the calendar channels,
    left-pad short series of a table (with a mask channel), encode the statics, build the window index."""
    H = cfg.horizon
    check_forecast_fits(series, H)  # R13: before training, not when the trained model first forecasts
    panel = is_panel(series.layout, len(series.ids))
    splits = series_splits(series.lengths(), cfg, panel)
    season = cfg.season if cfg.season is not None else season_from_freq(series.freq)
    window = _panel_window(cfg, series, splits, season) if panel else _fit_window(cfg, series, splits, season)
    S, C = len(series.values), len(series.channel_names)
    T = series.n_targets
    transform.check_positive(series.ids, series.values, T, cfg.transform, series.times)
    values = [transform.forward(v, T, cfg.transform) for v in series.values]  # the series itself for none
    how = scaling_how(cfg, panel, season)
    if how in ("standard", "diff"):
        means, stds, flat = scaling.fit_scalers(values, [sp.train_end for sp in splits])
        if how == "diff":  # the targets in units of their mean seasonal change (MASE's scale)
            stds[:, :T] = scaling.diff_scales(values, [sp.train_end for sp in splits], season, T, means[:, :T],
                                              stds[:, :T])
        if panel:  # a series too short to measure its spread takes the table's typical one
            weak = np.array([sp.train_end < scaling.MIN_SPREAD_POINTS for sp in splits])
            weak[[i for i, _ in flat]] = True
            stds = scaling.borrow_spread(means, stds, weak, relative=cfg.transform == "none")
    else:
        means, stds, flat = np.zeros((S, C)), np.ones((S, C)), []
    sids = series.ids
    # a series of one training point has no spread to measure (it is scaled by its level alone), not a constant column
    flat = [(i, j) for i, j in flat if splits[i].train_end >= 2]
    constant = [series.channel_names[j] + (f" of series {short(sids[i])}" if sids[i] else "") for i, j in flat]
    scaled = []
    for i, vals in enumerate(values):
        scaled.append(scaling.transform(vals, means[i], stds[i]))
        if not np.isfinite(scaled[-1]).all():  # a NaN the data kept, or D14: an overflow, refused naming rows
            scaling.check_overflow(vals, scaled[-1], series.channel_names, series.times[i],
                                   f"series {short(sids[i])}" if sids[i] else "the series")
    if precision == "fp16":
        check_fp16_range(scaled, series, cfg.scaling)
    inputs = fit_inputs(series, cfg, id_embedding)
    if inputs.calendar:  # known for every step, past and future: derived from the timestamps, never scaled
        scaled = [np.concatenate([s, calendar_block(inputs, t, series.tz)], axis=1)
                  for s, t in zip(scaled, series.times)]
    if constant:
        shown = ", ".join(constant[:5]) + (f" and {len(constant) - 5:,} more" if len(constant) > 5 else "")
        log.warning("constant columns (std 0 on the training split) scaled with std 1 (no division by zero): %s;"
                    " a constant input carries no signal: drop it from data.features or check the data", shown)
    pads = [pad_for(sp.train_end, window, H) for sp in splits] if panel else [0] * S
    masked = panel and (any(pads) or any(sp.n < window for sp in splits))
    if masked:  # the mask joins the past-only channels, before the known-future ones (Roles: those come last)
        flat, lengths = padded_with_mask(scaled, pads, series.n_past_only)
    else:
        flat, lengths = np.concatenate(scaled), [len(s) for s in scaled]
    del scaled
    finite = None
    if cfg.missing == "drop-windows":
        finite = np.split(np.isfinite(flat).all(axis=1), np.cumsum(lengths)[:-1])
    index = build_index(lengths, splits, window, H, finite, pads)
    if len(index.train) == 0:
        raise DataError(f"no complete training window of window + horizon = {window + H} points exists"
                        " (missing values break every one): use data.missing: interpolate or a shorter window")
    if len(index.val) == 0:
        if panel:
            raise DataError(f"no series of the {S:,} can hold out a validation part: with data.split "
                            f"{split_how(cfg, panel)!r} a series needs at least {_val_need(cfg)}"
                            f" points to keep validation and test beside one training window (the longest has "
                            f"{max(sp.n for sp in splits)}): lower data.horizon, or add longer series")
        raise DataError(f"no complete validation window of {window + H} points: lower data.window or "
                        "data.horizon, raise data.val_fraction, or fill missing values")
    return Prepared(series=series, window=window, horizon=H, season=season, splits=splits,
                    means=means, stds=stds, scaled=flat,
                    index=index, constant=constant, inputs=inputs,
                    statics=static_table(inputs, series.static, series.ids),
                    pads=pads if masked else None, mask_channel=masked, scaling_kind=how)


def padded_with_mask(scaled: list[np.ndarray], pads: list[int], at: int) -> tuple[np.ndarray, list[int]]:
    """Every series left-padded by ``pads[i]`` copies of its first row (windows.left_pad) and concatenated, with
    the mask channel (0.0 on padding, 1.0 on real rows) inserted at column ``at``: (sum(pads + N_i), C + 1) and
    the padded lengths. One gather for all series (a concatenate per series cost 2 s at 20k series)."""
    n = np.array([len(s) for s in scaled], dtype=np.int64)
    p = np.asarray(pads, dtype=np.int64)
    flat = np.concatenate(scaled)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    new = n + p
    seg = np.repeat(np.arange(len(n)), new)
    within = np.arange(int(new.sum())) - np.repeat(np.cumsum(new) - new, new)  # each row's place in its series
    rows = flat[start[seg] + np.maximum(within - p[seg], 0)]
    mask = (within >= p[seg]).astype(flat.dtype)[:, None]
    return np.concatenate([rows[:, :at], mask, rows[:, at:]], axis=1), new.tolist()


def _val_need(cfg: DataConfig) -> str:
    H = cfg.horizon
    if split_how(cfg, True) == "last-horizon":
        return f"2 * horizon + 1 = {2 * H + 1}"
    return f"(data.min_val_horizons + 1) * horizon + 1 = {(cfg.min_val_horizons + 1) * H + 1} (more with the fractions)"
