"""One typed config tree, validated once, every problem reported together.

>>> cfg = ForecastConfig.model_validate({"data": {"horizon": 12}, "model": {"hidden_size": 32}})
>>> cfg.model.hidden_size
32
"""

from __future__ import annotations

import copy
import os
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from lstmcast.config_checks import all_keys, describe, merge_auto_unions, role_problems, suggest_key
from lstmcast.errors import MAX_ECHO, ConfigError, cut, did_you_mean, short
from lstmcast.safe_yaml import load_yaml, read_yaml_mapping, yaml_load_bytes

__all__ = ["ForecastConfig", "DataConfig", "load_config", "read_yaml_mapping", "validate_config", "yaml_load_bytes"]

CONFIG_VERSION = 1
MAX_INT = 2**63 - 1  # what torch and numpy can hold; a larger integer is a typo or an attack (FAULTS C5)


def _admits(annotation: Any, kind: type) -> bool:
    """Whether ``kind`` appears anywhere in a field's annotation (``int | None``, ``list[bool]`` ...)."""
    return annotation is kind or annotation is Any or any(_admits(a, kind) for a in get_args(annotation))


def _has_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(_has_bool(v) for v in value))


def _has_huge_int(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return not -MAX_INT - 1 <= value <= MAX_INT
    return isinstance(value, (list, tuple)) and any(_has_huge_int(v) for v in value)


class _Section(BaseModel):
    # allow_inf_nan: an inf or nan never makes sense in a config and poisons training silently (FAULTS C6)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse what pydantic's lax mode would coerce: true/false for a number (true -> 1), huge ints."""
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else Any
        if _has_bool(value) and not _admits(annotation, bool):
            raise PydanticCustomError("bool_not_number", "a boolean (true/false) is not accepted for this key "
                                      "(it would be read as 1 or 0)")
        if _has_huge_int(value):
            raise PydanticCustomError("int_too_large", f"integers must lie within +-{MAX_INT} (2**63-1)")
        return value


def _split_names(value: Any) -> Any:
    """Accept ``"a,b"`` as well as ``["a", "b"]`` for column lists."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


# calendar features derivable from timestamps (lstmcast.data.calendar computes them)
CalendarName = Literal["minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year",
                       "week_of_year", "month_of_year", "quarter_of_year"]
_CALENDAR_NAMES = get_args(CalendarName)


def _calendar_spec(value: Any) -> Any:
    """``auto`` / ``none`` / a list (or ``"a,b"``) of calendar names, each known and named once."""
    if isinstance(value, str) and value in ("auto", "none"):
        return value
    names = _split_names(value)
    unknown = [n for n in names if n not in _CALENDAR_NAMES] if isinstance(names, list) else [names]
    if unknown:
        raise PydanticCustomError("calendar_name", f"unknown calendar feature {short(unknown[0])}"
                                  f"{did_you_mean(str(unknown[0])[:MAX_ECHO], _CALENDAR_NAMES)}: use 'auto', "
                                  f"'none' or a list of {', '.join(_CALENDAR_NAMES)}")
    if len(set(names)) != len(names):
        raise PydanticCustomError("calendar_repeat", "data.calendar must name each feature once")
    return names


def _freq_value(value: Any) -> Any:
    """A pandas frequency, or an integer time step written ``1`` or ``"1"`` (a run's saved freq is text)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) or (isinstance(value, int) and value < 1):
        raise PydanticCustomError("freq_step", "an integer time step must be a whole number >= 1 (or give a "
                                  "pandas frequency such as 'h' or '15min')")
    return value


class DataConfig(_Section):
    """Column roles, one per column: target, features (known up to the origin), future_features (known over
    the horizon too), static_features (one value per series), id_col, time_col. ``freq``: a pandas frequency
    or, for integer time, the integer step. ``calendar``: see lstmcast.data.calendar."""

    path: str | None = None
    time_col: str | None = None
    target: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)
    future_features: list[str] = Field(default_factory=list)
    static_features: list[str] = Field(default_factory=list)
    # auto: hour of day and day of week for sub-daily data, nothing for daily and longer steps (measured: README)
    calendar: Literal["auto", "none"] | list[CalendarName] = "auto"
    id_col: str | None = None
    format: Literal["auto", "long", "wide"] = "auto"
    freq: int | str | None = None
    window: int | None = Field(default=None, ge=2)
    horizon: int = Field(default=24, ge=1)
    season: int | None = Field(default=None, ge=1)
    missing: Literal["error", "ffill", "interpolate", "drop-windows"] = "error"
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    # validation holds at least this many horizons (H + 1 windows for 2), so early stopping and the linear
    # skip's choice do not rest on one noisy window of a short series
    min_val_horizons: int = Field(default=2, ge=1, le=10)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    # fraction: validation and test take val_fraction / test_fraction of each series (at least min_val_horizons
    # and one horizon); last-horizon: the test is each series' last horizon (one origin per series, the M and
    # Tourism competitions' protocol), validation the min_val_horizons horizons before it; auto: fraction for one
    # series, last-horizon for a table of many (README "Panels of short series")
    split: Literal["auto", "fraction", "last-horizon"] = "auto"
    # log: the targets' log is scaled and learned, forecasts are exp'ed back (strictly positive targets only);
    # metrics and baselines stay in original units (lstmcast.data.transform)
    transform: Literal["none", "log"] = "none"
    # standard: each series' training mean and std; diff: the targets' std replaced by their mean seasonal change
    # (|y[t] - y[t - season]|, MASE's scale); auto: diff for a table of many seasonal series, else standard
    scaling: Literal["auto", "standard", "diff", "none"] = "auto"
    utc: bool = False
    time_format: str | None = None
    delimiter: str | None = None
    decimal: Literal[".", ","] = "."  # ',' for CSVs written with decimal commas (12,5), usually ';'-separated
    # distributed runs on a long Parquet table too big for one machine: each rank reads and validates only its
    # own series (round-robin over the sorted ids; data/shard.py); refused for CSV, DataFrames and one process
    shard_series: bool = False

    _split_target = field_validator("target", "features", "future_features", "static_features",
                                    mode="before")(_split_names)
    _calendar = field_validator("calendar", mode="before")(_calendar_spec)
    _freq = field_validator("freq", mode="before")(_freq_value)


class ModelConfig(_Section):
    # auto: sized from the training windows per parameter (lstmcast.model.sizing), so short series get small models
    hidden_size: Annotated[int, Field(ge=1, le=8192)] | Literal["auto"] = "auto"
    num_layers: int = Field(default=2, ge=1, le=16)
    # auto: 0.1 between stacked layers, 0 with one layer (LSTM dropout acts between layers only)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | Literal["auto"] = "auto"
    bidirectional: bool = False
    residual: bool = False
    bias: bool = True
    # the window's mean is subtracted from the target channels and added back to the forecast: robust to
    # level shifts and trends, and (unlike the last value) not noisy; see README "Defaults, measured"
    window_norm: Literal["last", "mean", "none"] = "mean"
    # a linear map from each target's own window to its horizon, fitted by ridge regression before training
    # (shrunk towards the naive / seasonal-naive forecast, chosen on validation); the LSTM learns what it misses
    linear_skip: bool = True
    # prediction intervals: the central L% interval for each level (none: a point forecast); the model learns
    # the quantiles they need plus the median with the pinball loss (lstmcast.model.quantiles)
    levels: list[int] = Field(default_factory=list, max_length=20)
    # conformal: each interval widened or narrowed on the validation windows to reach its nominal coverage
    calibration: Literal["conformal", "none"] = "conformal"
    # a global model learns an embedding per training series id; a series it never saw gets the "unknown" one
    id_embedding: bool = False
    # quantile: the learned quantiles calibrated; residual: the median -+ its errors' conformal quantiles;
    # auto: the one with the lower interval score on the calibration windows (calibration.py)
    interval_method: Literal["auto", "quantile", "residual"] = "auto"
    # the LSTM's (h, c) carried per series: trained over each series' history in consecutive chunks
    # (train.tbptt_steps) and advanced one step per new observation by `lstmcast update` (issue 24);
    # it reads one step at a time, so window_norm defaults to none and linear_skip to false with it
    stateful: bool = False
    # a table's forecast: (1 - local_weight) x the model's + local_weight x each series' own Theta forecast
    # (lstmcast.model.theta); auto: theta for a table of many series where it helps on the validation windows
    # (lstmcast.inference.local), none for one series and a stateful model
    local: Literal["auto", "theta", "none"] = "auto"
    local_weight: float = Field(default=0.3, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _stateful_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("stateful") is True:
            value = {"window_norm": "none", "linear_skip": False, **value}
        return value

    @field_validator("levels", mode="before")
    @classmethod
    def _levels_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else _split_names(value)

    @field_validator("levels")
    @classmethod
    def _levels_range(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if not 1 <= v <= 99]
        if bad:
            raise PydanticCustomError("level_range", f"levels are central interval coverages in percent, each an "
                                      f"integer 1..99 (e.g. [80, 95]); {bad} is outside")
        if len(set(value)) != len(value):
            raise PydanticCustomError("level_repeat", "levels must not repeat a level")
        return sorted(value)


class TrainConfig(_Section):
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_epochs: int = Field(default=100, ge=1)
    patience: int = Field(default=10, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)
    clip_norm: float | None = Field(default=1.0, gt=0.0)
    # auto: mae for a table of many series (the panels' metric, MASE, is an absolute error), mse for one series
    loss: Literal["auto", "mse", "mae", "huber"] = "auto"
    seed: int = Field(default=0, ge=0, le=MAX_INT, strict=True)  # strict: 1e23 is not a seed
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: fp32 unless a short measured probe shows another precision faster at the same validation
    # loss (training/precision.py); short runs skip the probe and stay fp32
    precision: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = "auto"
    accel: Literal["auto", "eager", "graphs"] = "auto"
    threads: int | None = Field(default=None, ge=1)
    # auto: glibc's malloc keeps freed training memory for reuse instead of page-faulting it back every step
    # (training/accel.keep_freed_memory: fits 1.2-1.4x faster on CPU); system: malloc left as it is
    allocator: Literal["auto", "system"] = "auto"
    max_steps_per_epoch: int | None = Field(default=None, ge=1)
    # many series: an epoch draws this many training windows (without replacement, across all series, from the
    # seed) instead of one pass over all of them, so validation and early stopping come at a useful rate
    windows_per_epoch: int | None = Field(default=None, ge=1)
    # validation (early stopping, the skip's choice, interval calibration) on at most this many windows, a fixed
    # sample from the seed when there are more (100k series x 15 windows: one check cost 50x an epoch); none: all
    val_windows: int | None = Field(default=65_536, ge=1)
    # a budget in optimizer steps, not epochs: no early stopping before min_steps, and an epoch (one validation
    # check) has at least min_epoch_steps steps, re-drawing the training windows, so a tiny series still trains
    min_steps: int = Field(default=300, ge=0)
    min_epoch_steps: int = Field(default=20, ge=1)
    # after early stopping, train the final model again on ALL the rows given (train + validation + test) for
    # the steps early stopping chose; the backtest is still the first model's, which never saw the test split
    refit: bool = True
    # checkpoints (training/checkpoint.py): every N optimizer steps, or with 0 at the end of an epoch once
    # checkpoint_seconds have passed since the last one (0: every epoch); always at the end and on SIGINT/SIGTERM
    checkpoint_every: int = Field(default=0, ge=0)
    checkpoint_seconds: float = Field(default=60.0, ge=0.0)
    max_skipped_steps: int = Field(default=5, ge=1)
    skip_window: int = Field(default=50, ge=1)
    rollback_lr_factor: float = Field(default=0.5, gt=0.0, lt=1.0)
    max_rollbacks: int = Field(default=3, ge=0)
    # model.stateful: the steps of one chunk of truncated backpropagation (the state is carried across chunks
    # and detached between them)
    tbptt_steps: int = Field(default=64, ge=2, le=100_000)


class EvalConfig(_Section):
    stride: int | None = Field(default=None, ge=1)
    max_origins: int = Field(default=52, ge=1)


class MonitorConfig(_Section):
    tensorboard: bool = True
    every: int = Field(default=1, ge=1)


class TuneConfig(_Section):
    """`lstmcast tune`: the study's budget and its search space. Ranges are [low, high]; lists are choices.

    ``hidden_size`` unset: [2F / hidden_factor, 4F * hidden_factor] around the guide's 2-4x rule (F input
    features). ``window`` unset: ``window_periods`` seasonal periods. ``dropout`` is drawn only where
    num_layers > 1. See lstmcast.tuning.space.
    """

    trials: int = Field(default=20, ge=1)
    objective: Literal["val", "mase"] = "val"
    pruner: Literal["median", "hyperband", "none"] = "hyperband"  # 3.2x the trials/hour of none (tune_speed.py)
    max_epochs: int = Field(default=20, ge=1)
    seed: int = Field(default=0, ge=0, le=MAX_INT, strict=True)
    hidden_size: tuple[int, int] | None = None
    hidden_factor: float = Field(default=8.0, ge=1.0)
    num_layers: tuple[int, int] = (1, 4)
    dropout: tuple[float, float] = (0.0, 0.3)
    lr: tuple[float, float] = (1e-4, 1e-2)
    window: tuple[int, int] | None = None
    window_periods: tuple[int, int] = (1, 4)
    batch_size: list[int] = Field(default_factory=lambda: [16, 32, 64, 128])
    bidirectional: list[bool] = Field(default_factory=lambda: [False, True])
    residual: list[bool] = Field(default_factory=lambda: [False, True])
    heartbeat_s: int = Field(default=20, ge=1)


class ForecastConfig(_Section):
    version: int = CONFIG_VERSION
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _lenient_problems(raw: dict[str, Any], errors: list[dict[str, Any]]) -> list[str]:
    """The semantic problems of ``raw`` with its invalid keys dropped, so one error lists everything."""
    lenient = copy.deepcopy(raw)
    for err in errors:
        node: Any = lenient
        for part in err["loc"][:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(err["loc"][-1], None)
    try:
        return _semantic_problems(ForecastConfig.model_validate(lenient))
    except (ValidationError, TypeError, AttributeError):
        return []


def _semantic_problems(cfg: ForecastConfig) -> list[str]:
    problems = []
    m, d = cfg.model, cfg.data
    if m.dropout != "auto" and m.dropout > 0 and m.num_layers == 1:
        problems.append(
            f"model.dropout={m.dropout} has no effect with model.num_layers=1 (LSTM dropout acts "
            "between layers): set model.num_layers>=2 or model.dropout=0"
        )
    if m.interval_method == "residual" and m.calibration == "none":
        problems.append("model.interval_method=residual builds the intervals from the calibration windows' "
                        "errors: set model.calibration=conformal, or interval_method=quantile for the raw ones")
    if m.stateful:
        problems += _stateful_problems(m, d)
    if d.val_fraction + d.test_fraction >= 0.8:
        problems.append(
            f"data.val_fraction + data.test_fraction = {d.val_fraction + d.test_fraction:.2f} leaves "
            "under 20% of the series to train on: lower one of them"
        )
    if d.decimal == (d.delimiter or ","):
        problems.append(f"data.decimal {d.decimal!r} is also the column delimiter: a CSV with decimal commas "
                        "separates its columns by another character, usually ';' (set data.delimiter: ';')")
    if cfg.version != CONFIG_VERSION:
        problems.append(f"version: this lstmcast reads config version {CONFIG_VERSION}, got {cfg.version}")
    return problems + role_problems(d)


def _stateful_problems(m: ModelConfig, d: DataConfig) -> list[str]:
    """model.stateful: a state carried one observation at a time rules out what needs a whole window."""
    why = []
    if d.static_features or m.id_embedding:
        why.append("data.static_features and model.id_embedding (the carried states keep no per-series statics "
                   "yet): drop them, or train a window model (stateful: false)")
    if m.levels:
        why.append("model.levels (intervals are calibrated on validation windows read from a zero state; "
                   "calibration from carried states is not there yet): drop levels, or train a window model")
    if m.bidirectional:
        why.append("model.bidirectional (the backward direction reads the steps after each one): set it false")
    if m.window_norm != "none":
        why.append(f"model.window_norm={m.window_norm!r} (the window's level needs the whole window; "
                   "data.scaling already centres each series): set window_norm: none")
    if m.linear_skip:
        why.append("model.linear_skip (it maps a whole window to the horizon): set linear_skip: false")
    if m.local == "theta":
        why.append("model.local=theta (the combination is made on window forecasts): set local: none or auto")
    return [f"model.stateful=true carries the state one step at a time, which rules out {w}" for w in why]


def validate_config(raw: dict[str, Any] | ForecastConfig | None) -> ForecastConfig:
    """Validate a mapping into a ForecastConfig, raising one ConfigError with every problem."""
    if isinstance(raw, ForecastConfig):
        raw = raw.model_dump()
    try:
        cfg = ForecastConfig.model_validate(raw or {})
    except ValidationError as exc:
        errors = merge_auto_unions(exc.errors())
        extra = _lenient_problems(raw, errors) if isinstance(raw, dict) else []
        raise ConfigError([describe(e, all_keys(ForecastConfig)) for e in errors] + extra) from None
    problems = _semantic_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {short(item)}: expected KEY=VALUE, e.g. --set model.hidden_size=128")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {short(item)}: the key before '=' is empty")
    try:
        value = load_yaml(text, f"--set {cut(key)}") if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars/lists) to a mapping."""
    known = all_keys(ForecastConfig)
    problems = []
    for item in overrides:
        path, value = _parse_override(item)
        dotted = ".".join(path)
        if dotted not in known:
            problems.append(f"unknown key '{cut(dotted)}' in --set{suggest_key(dotted[:MAX_ECHO], known)}")
            continue
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"--set {cut(dotted)}: '{cut(part)}' is not a section")
                break
        else:
            node[path[-1]] = value
    if problems:  # report the rest of the config's problems in the same error
        try:
            validate_config(raw)
        except ConfigError as exc:
            problems.extend(exc.problems)
        raise ConfigError(problems)
    return raw


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> ForecastConfig:
    """Read a YAML config (optional), apply dotted overrides, validate everything at once."""
    raw = read_yaml_mapping(path) if path is not None else {}
    return validate_config(apply_overrides(raw, list(overrides or [])))
