"""What a run folder's meta.json, scaler.json and model.safetensors must hold (FAULTS T12).

The sha256 manifest catches accidents, not an edit followed by a re-hash. So the values are
checked too, with strict types (``true`` is not a window, ``"24"`` is not a horizon): finite float32
weights of the expected shapes, finite means, finite positive stds, ids and channels that agree
across files, a layout, time column, frequency, anchor and zone the forecast code can use. Every
failure is a CheckpointError (exit 4) naming the file and the value.

>>> try:
...     check_meta({"format_version": 1, "layout": "single"}, Path("run/meta.json"))
... except CheckpointError as exc:
...     print(str(exc)[:60])
run/meta.json is damaged or was edited: time_col: missing; i
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lstmcast.errors import CheckpointError, short
from lstmcast.model.quantiles import quantiles_for

if TYPE_CHECKING:
    from torch import Tensor

REMEDY = ": retrain this run, or restore the run folder from a backup"
_F32_MAX, _F32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)
Name = Annotated[str, Field(min_length=1, max_length=1000)]


class _Strict(BaseModel):
    # unknown keys are refused (R11): a newer lstmcast that adds keys writes a new format_version
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class Inputs(_Strict):
    """meta.json's ``inputs``: the known-future channels and static encodings (lstmcast.data.inputs.InputSpec)."""

    future_features: list[str] = Field(default_factory=list)
    calendar: list[str] = Field(default_factory=list, max_length=20)
    static_numeric: list[str] = Field(default_factory=list, max_length=10_000)
    static_mean: list[float] = Field(default_factory=list)
    static_std: list[float] = Field(default_factory=list)
    static_min: list[float] = Field(default_factory=list)
    static_max: list[float] = Field(default_factory=list)
    static_categorical: list[str] = Field(default_factory=list, max_length=10_000)
    vocabularies: list[list[str]] = Field(default_factory=list)
    id_vocabulary: list[str] | None = None


class Local(_Strict):
    """meta.json "local" (a table, model.local): the forecast is (1 - weight) x the model's + weight x each
    series' Theta forecast with this drift (lstmcast.model.theta), wherever the model forecasts."""

    method: Literal["theta"]
    weight: float = Field(ge=0.0, le=1.0)
    drift: float = Field(ge=0.0, le=1.0)
    # informational (model.local auto): each weight's validation error, "w=0" the model alone's
    gate: dict[Annotated[str, Field(max_length=20)], float] | None = Field(default=None, max_length=10)


class RunMeta(_Strict):
    """meta.json, typed: what a fitted Forecaster knows about its data and model (``Forecaster.meta_``).

    Read by attribute (``meta.window``), never by string key. The model is rebuilt from its sizes, so they
    are bounded: no terabyte allocations. Unknown keys are refused (``extra="forbid"``).
    """

    format_version: Literal[1]
    layout: Literal["single", "long", "wide"]
    time_col: Name
    id_col: Name | None
    targets: list[str] = Field(min_length=1)
    features: list[str]
    channels: list[str] = Field(min_length=1)
    ids: list[str] = Field(min_length=1)
    freq: Name
    tz: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    anchor: str = Field(min_length=1, max_length=100)
    window: int = Field(ge=1, le=10_000_000)
    horizon: int = Field(ge=1, le=1_000_000)
    season: Annotated[int, Field(ge=1, le=10_000_000)] | None
    n_targets: int = Field(ge=1, le=100_000)
    input_size: int = Field(ge=1, le=100_000)
    lengths: list[int] | None = None
    train_end: list[int] | None = None
    val_end: list[int] | None = None
    last_time: list[str] | None = None
    future_features: list[str] = Field(default_factory=list)
    integer_time: bool = False
    inputs: Inputs | None = None
    lstmcast_version: str | None = None
    torch_version: str | None = None
    created: str | None = None
    device: str | None = None
    precision: str | None = None
    n_parameters: int | None = None
    refit: dict[str, int] | None = None  # train.refit: steps, windows, rows of the final model (None: not refitted)
    world_size: int = 1
    # short series in the training table: the model reads a mask channel (1 real row, 0 left padding) after the
    # past-only channels, and a series shorter than the window is forecast from a padded window
    mask_channel: bool = False
    transform: Literal["none", "log"] = "none"  # data.transform of the targets (lstmcast.data.transform)
    # data.scaling as training resolved it (a run from before "diff" existed was scaled by its std)
    scaling: Literal["standard", "diff", "none"] = "standard"
    intervals: dict[str, Any] | None = None  # checked against Intervals when a run folder is loaded
    local: Local | None = None  # a table's combination with each series' Theta forecast (model/theta.py)

    def as_json(self) -> dict[str, Any]:
        """The JSON object meta.json holds."""
        return self.model_dump(mode="json")

    def inputs_dict(self) -> dict[str, Any] | None:
        """``inputs`` as the plain mapping lstmcast.data.inputs.InputSpec.from_dict takes."""
        return self.inputs.model_dump() if self.inputs is not None else None


class Intervals(_Strict):
    """meta.json "intervals" (model.levels set): what reproduces the calibrated intervals."""

    levels: list[Annotated[int, Field(ge=1, le=99)]] = Field(min_length=1, max_length=20)
    quantiles: list[Annotated[float, Field(gt=0.0, lt=1.0)]]
    calibration: Literal["conformal", "none"]
    method: Literal["quantile", "residual"] = "quantile"  # how the offsets apply (quantiles.apply_offsets)
    offsets: list[list[list[float]]] | None  # (levels, H, T) in scaled units
    # informational (model/quantiles.py intervals_meta): how the offsets were calibrated
    calibration_windows: int = Field(default=0, ge=0)
    pooled: bool = False
    training_windows: int = Field(default=0, ge=0)
    method_scores: dict[str, float] | None = None


class ScalerFile(_Strict):
    """scaler.json: one row of per-channel mean and std per series."""

    ids: list[str] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)
    mean: list[list[float]]
    std: list[list[float]]


def schema_problems(model: type[BaseModel], data: dict[str, Any], limit: int = 10) -> list[str]:
    """``data`` checked against ``model``: one short line per problem, naming the key and the value."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc'])) or 'top level'}: "
                + ("missing" if e["type"] == "missing" else f"{e['msg'].lower()}, got {short(e.get('input'))}")
                for e in exc.errors()[:limit]]
    return []


def raise_damaged(path: Path, problems: list[str]) -> None:
    if problems:
        raise CheckpointError(f"{path} is damaged or was edited: " + "; ".join(problems) + REMEDY)


def _repeated(names: list[str]) -> list[str]:
    return sorted(n for n, count in Counter(names).items() if count > 1)


def _meta_consistency(m: dict[str, Any]) -> list[str]:
    """Relations between meta.json's fields that the forecast code relies on."""
    problems = []
    if m["layout"] == "long" and m["id_col"] is None:
        problems.append("layout 'long' needs an id_col, got None")
    for key in ("targets", "features", "ids"):
        if _repeated(m[key]):
            problems.append(f"{key} repeats {short(_repeated(m[key]))}")
    future = m.get("future_features") or []
    channels = (["value"] if m["layout"] == "wide" else m["targets"]) + m["features"] + future
    if m["channels"] != channels:
        problems.append(f"channels {short(m['channels'])} are not the targets, features, then future features "
                        f"{short(channels)}")
    inputs = m.get("inputs") or {}
    calendar = 2 * len(inputs.get("calendar") or [])
    mask = 1 if m.get("mask_channel") is True else 0
    if m["input_size"] != len(m["channels"]) + calendar + mask:
        problems.append(f"input_size {m['input_size']} differs from the {len(m['channels'])} channels"
                        + (f" + {calendar} calendar channels" if calendar else "") + (" + the mask" if mask else ""))
    if inputs and (inputs.get("future_features") or []) != future:
        problems.append("inputs.future_features differ from future_features")
    if inputs and not (len(inputs.get("static_numeric") or []) == len(inputs.get("static_mean") or [])
                       == len(inputs.get("static_std") or [])):
        problems.append("inputs: static_numeric, static_mean and static_std differ in length")
    if inputs and len(inputs.get("static_categorical") or []) != len(inputs.get("vocabularies") or []):
        problems.append("inputs: static_categorical and vocabularies differ in length")
    if m["n_targets"] != (1 if m["layout"] == "wide" else len(m["targets"])):
        problems.append(f"n_targets {m['n_targets']} does not fit {len(m['targets'])} targets in layout "
                        f"{m['layout']!r}")
    if m["layout"] == "single" and len(m["ids"]) != 1:
        problems.append(f"layout 'single' has one series, got {len(m['ids'])} ids")
    for key in ("lengths", "train_end", "val_end", "last_time"):
        if m.get(key) is not None and len(m[key]) != len(m["ids"]):
            problems.append(f"{key} has {len(m[key])} entries for {len(m['ids'])} series")
    return problems + _time_problems(m)


def _time_problems(m: dict[str, Any]) -> list[str]:
    """The frequency, anchor and zone must parse the way inference and the fast path parse them."""
    import pandas as pd

    problems = []
    if m.get("integer_time"):  # integer steps: freq is the step, the anchor an integer
        if not str(m["freq"]).isdigit() or int(m["freq"]) < 1:
            problems.append(f"freq: an integer time step must be a positive integer, got {short(m['freq'])}")
        if not str(m["anchor"]).lstrip("-").isdigit():
            problems.append(f"anchor: not an integer time, got {short(m['anchor'])}")
        return problems
    try:
        pd.tseries.frequencies.to_offset(m["freq"])
    except (ValueError, TypeError):
        problems.append(f"freq: not a pandas frequency, got {short(m['freq'])}")
    try:
        anchor = pd.Timestamp(m["anchor"])
        np.datetime64(m["anchor"], "ns")
        if anchor is pd.NaT or anchor.tzinfo is not None:
            raise ValueError("naive timestamp expected")
    except (ValueError, TypeError, OverflowError):
        problems.append(f"anchor: not a timestamp, got {short(m['anchor'])}")
        anchor = pd.Timestamp(0)
    if m.get("tz") is not None:
        try:
            pd.DatetimeIndex([anchor]).tz_localize("UTC").tz_convert(m["tz"])
        except (ValueError, TypeError, KeyError, LookupError):
            problems.append(f"tz: not a time zone, got {short(m['tz'])}")
    return problems


def check_meta(meta: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError naming every problem of meta.json (types first, then relations)."""
    raise_damaged(path, schema_problems(RunMeta, meta))
    raise_damaged(path, _meta_consistency(meta))
    if meta.get("intervals") is not None:
        raise_damaged(path, [f"intervals.{p}" for p in schema_problems(Intervals, meta["intervals"])])
        raise_damaged(path, _interval_problems(meta["intervals"], meta["horizon"], meta["n_targets"]))


def _interval_problems(iv: dict[str, Any], H: int, T: int) -> list[str]:
    """Quantiles that the levels need, offsets one per level, horizon step and target."""
    problems = []
    if iv["quantiles"] != quantiles_for(iv["levels"]) or sorted(set(iv["levels"])) != iv["levels"]:
        problems.append(f"intervals: quantiles {short(iv['quantiles'])} are not those of levels "
                        f"{short(iv['levels'])}")
    off = iv["offsets"]
    if off is not None and np.shape(off) != (len(iv["levels"]), H, T):
        problems.append(f"intervals.offsets must be {len(iv['levels'])} x {H} x {T} (levels x horizon x targets)")
    elif iv.get("method") == "residual" and (off is None or np.min(off) < 0):
        problems.append("intervals.offsets of method residual are half-widths around the median: they must be "
                        "given and >= 0")
    return problems


def check_scaler(scaler: dict[str, Any], meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """scaler.json checked against meta.json; returns it with mean/std as float64 arrays (S, C)."""
    raise_damaged(path, schema_problems(ScalerFile, scaler))
    problems = []
    if scaler["ids"] != meta["ids"]:
        problems.append(f"ids {short(scaler['ids'])} differ from meta.json's {short(meta['ids'])}")
    if scaler["channels"] != meta["channels"]:
        problems.append(f"channels {short(scaler['channels'])} differ from meta.json's {short(meta['channels'])}")
    shape = (len(meta["ids"]), len(meta["channels"]))  # value channels; calendar ones are never scaled
    for key in ("mean", "std"):
        if len(scaler[key]) != shape[0] or any(len(row) != shape[1] for row in scaler[key]):
            problems.append(f"{key} must be {shape[0]} rows of {shape[1]} values (series x channels)")
    raise_damaged(path, problems)
    mean, std = np.asarray(scaler["mean"], dtype=np.float64), np.asarray(scaler["std"], dtype=np.float64)
    for key, values, bad, need in (
            ("std", std, ~(std > 0), "> 0 (it divides the inputs)"),
            # R11: lstmcast computes in float32; a std of 1e300 forecast 1.6e297 with exit 0
            ("std", std, ~((std >= _F32_TINY) & (std <= _F32_MAX)), f"within float32's range [{_F32_TINY:.3g}, "
             f"{_F32_MAX:.3g}] (the data it was fitted on is)"),
            ("mean", mean, ~(np.abs(mean) <= _F32_MAX), f"within float32's range (|mean| <= {_F32_MAX:.3g})")):
        where = np.argwhere(bad)
        if where.size:
            i, j = where[0]
            raise_damaged(path, [f"{key} must be {need}, got {values[i, j]} for series {short(meta['ids'][i])} "
                                 f"channel {short(meta['channels'][j])}"])
    return {**scaler, "mean": mean, "std": std}


def check_weights(state: dict[str, Tensor], path: Path) -> None:
    """Every tensor float32 and finite: a NaN forecasts NaN, a float64 model refuses float32 inputs."""
    import torch

    wrong = [f"{name} is {t.dtype}" for name, t in state.items() if t.dtype != torch.float32]
    if wrong:
        raise_damaged(path, [f"{len(wrong)} tensors are not torch.float32 ({', '.join(wrong[:3])})"])
    bad = [name for name, t in state.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise_damaged(path, [f"{len(bad)} tensors hold NaN or infinite values ({', '.join(bad[:3])})"])
