"""The doctor's findings: each rule of the guide (docs/GUIDE.md) as a check with numbers and a fix.

Error findings reuse the exact text ``train`` stops with (config.py, training/accel.py,
data/prepare.py), so the doctor and ``train`` refuse a config with the same words.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from lstmcast.config import ForecastConfig, _semantic_problems
from lstmcast.config_checks import all_keys, describe
from lstmcast.errors import ConfigError
from lstmcast.findings import Finding, split_message
from lstmcast.model.estimate import Dims, n_parameters

if TYPE_CHECKING:
    from lstmcast.data.prepare import Prepared
    from lstmcast.data.validate import SeriesSet
    from lstmcast.doctor.record import DoctorReport
    from lstmcast.training.accel import Accel

log = logging.getLogger(__name__)

# Heuristics, each stated in the finding it triggers.
MIN_WINDOWS_PER_PARAMETER = 0.01  # fewer than one training window per 100 parameters: overfitting risk
LONG_WINDOW = 200  # BPTT through more steps than this rarely helps an LSTM and costs linear time
DEEP_STACK = 4  # layers from which a plain stack risks vanishing gradients (guide section 3)
HIGH_DROPOUT = 0.5
SMALL_WIDTH = 16  # below this the guide's 2-4x hidden_size rule is stated as info, not advice


def config_findings(config: ForecastConfig | dict[str, Any] | None) -> tuple[ForecastConfig, list[Finding]]:
    """Structural problems raise ConfigError (nothing to examine); semantic ones become error findings."""
    if isinstance(config, ForecastConfig):
        cfg = config
    else:
        try:
            cfg = ForecastConfig.model_validate(config or {})
        except ValidationError as exc:
            raise ConfigError([describe(e, all_keys(ForecastConfig)) for e in exc.errors()]) from None
    findings = []
    m = cfg.model
    for problem in _semantic_problems(cfg):
        what, fix = split_message(problem)
        one_layer = m.num_layers == 1 and what.startswith("model.dropout=")
        findings.append(Finding("error", "dropout-one-layer" if one_layer else "config", what, fix))
    return cfg, findings


def device_findings(cfg: ForecastConfig) -> tuple[Accel | None, list[Finding]]:
    """Resolve device and precision as ``train`` does; an impossible combination is an error finding."""
    import torch

    from lstmcast.training.accel import resolve

    threads = torch.get_num_threads()
    try:
        return resolve(cfg.train.device, cfg.train.precision, cfg.train.threads), []
    except ConfigError as exc:
        what, fix = split_message(str(exc))
        return None, [Finding("error", "device", what, fix)]
    finally:
        torch.set_num_threads(threads)  # the doctor looks, it does not reconfigure the process


def target_device(cfg: ForecastConfig) -> str:
    """The device type training would use ('cuda' when asked for, even where none is visible)."""
    import torch

    dev = cfg.train.device
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 on this CPU (where bf16 autocast measured 1.4x faster, docs/PERFORMANCE.md): the
    flags training.accel reads for precision auto."""
    from lstmcast.training.accel import cpu_bf16_flags

    return bool(cpu_bf16_flags())


def model_findings(cfg: ForecastConfig, report: DoctorReport, series: SeriesSet | None,
                   prep: Prepared | None) -> list[Finding]:
    d = report.dims
    dev = target_device(cfg)
    found = [*_hidden_size(d), *_bidirectional(d, report), *_windows_per_parameter(cfg, report),
             *_stack(cfg, d), *_window_length(d, prep), *_training(cfg), *_device_advice(cfg, d, dev, report)]
    if cfg.model.stateful:
        found.append(_stateful(cfg, d, len(series.ids) if series is not None else None))
    if prep is not None and prep.constant:
        found.append(Finding("warning", "constant-columns",
                             f"constant on the training split (std 0, scaled with std 1): {', '.join(prep.constant)}",
                             "a constant input carries no signal: drop it from data.features or check the data"))
    for note in series.notes if series is not None else []:
        found.append(Finding("info", "data-note", note))
    return found


def _stateful(cfg: ForecastConfig, d: Dims, n_series: int | None) -> Finding:
    """model.stateful (issue 24): the carried state's shapes per layer and direction and its memory for S series."""
    S = n_series or 1
    floats = S * d.layers * d.D * d.hidden * 2
    per = ", ".join(f"layer {k + 1}: h, c ({d.hidden},)" for k in range(d.layers))
    return Finding("info", "stateful-state",
                   f"model.stateful: each series carries (h, c), each (num_layers * D, 1, hidden) = "
                   f"({d.layers * d.D}, 1, {d.hidden}) ({per}{', each direction' if d.D == 2 else ''}); for "
                   f"{S:,} series S x layers x D x hidden x 2 = {S:,} x {d.layers} x {d.D} x {d.hidden} x 2 = "
                   f"{floats:,} floats = {floats * 4 / 2**20:.3g} MiB in fp32 (+ the head's input, S x D x hidden). "
                   f"Training runs each history in chunks of train.tbptt_steps={cfg.train.tbptt_steps} steps "
                   "(detached between chunks, zero where a history starts)",
                   "after training: `lstmcast update RUN --data new.csv` advances each series one step a row; "
                   "`lstmcast predict RUN` forecasts from the carried state")


def _hidden_size(d: Dims) -> list[Finding]:
    lo, hi = 2 * d.F, 4 * d.F
    if lo <= d.hidden <= hi:
        return []
    pick = next((p for p in (2 ** k for k in range(1, 14)) if lo <= p <= hi), 3 * d.F)
    msg = (f"model.hidden_size={d.hidden} is {d.hidden / d.F:.3g}x the {d.F} input feature(s); the guide starts "
           f"at 2-4x, {lo}-{hi} here")
    if hi < SMALL_WIDTH:  # univariate and few-feature series: the rule gives a toy model, so only say it
        return [Finding("info", "hidden-size-range", msg, f"{lo}-{hi} is a very small model; with few features "
                        "let the windows per parameter and the validation loss decide the width")]
    return [Finding("advice", "hidden-size-range", msg, f"try model.hidden_size={pick} first and tune from there")]


def _bidirectional(d: Dims, report: DoctorReport) -> list[Finding]:
    if d.D != 2:
        return []

    one_way = n_parameters(replace(d, D=1))
    return [Finding("info", "bidirectional-head",
                    f"model.bidirectional=true doubles the LSTM output: the head takes D * hidden = 2 * {d.hidden} = "
                    f"{d.width} inputs, and the model has {report.n_parameters:,} parameters against {one_way:,} "
                    "one-way",
                    "lstmcast sizes the head for you; over a window of past values the backward pass adds "
                    "capacity, not future information: keep it only if the validation loss improves")]


def _windows_per_parameter(cfg: ForecastConfig, report: DoctorReport) -> list[Finding]:
    ratio = report.windows_per_parameter
    if ratio is None or ratio >= MIN_WINDOWS_PER_PARAMETER:
        return []

    d, W = report.dims, report.train_windows or 0
    hidden = d.hidden
    while hidden > 4 and W / n_parameters(replace(d, hidden=hidden)) < MIN_WINDOWS_PER_PARAMETER:
        hidden //= 2
    p2 = n_parameters(replace(d, hidden=hidden))
    dropout = "raise model.dropout towards 0.3" + (" (with model.num_layers>=2)" if d.layers == 1 else
                                                    f" (now {cfg.model.dropout:g})")
    return [Finding("warning", "few-windows-per-parameter",
                    f"{W:,} training windows for {report.n_parameters:,} parameters ({ratio:.3g} windows per "
                    f"parameter, under {MIN_WINDOWS_PER_PARAMETER:g}): overfitting risk",
                    f"use model.hidden_size={hidden} ({p2:,} parameters, {W / p2:.3g} windows per parameter) or "
                    f"{dropout}, or train on more data")]


def _stack(cfg: ForecastConfig, d: Dims) -> list[Finding]:
    m, found = cfg.model, []
    if d.residual and d.enc_in != d.width:
        ins = f"F={d.F} features" + (f" + S'={d.static_width} static encoding" if d.static_width else "")
        found.append(Finding("info", "residual-projection",
                             f"model.residual=true: layer 1 maps {ins} to D * hidden = {d.width}, so "
                             f"lstmcast adds a Linear({d.enc_in}, {d.width}, bias=False) projection on the skip "
                             f"({d.enc_in * d.width:,} parameters); later layers keep the width and need none"))
    if d.residual and d.layers == 1:
        found.append(Finding("advice", "residual-one-layer",
                             "model.residual=true with model.num_layers=1 puts a skip around a single LSTM",
                             "residual connections pay off in deep stacks: set model.num_layers>=3 or "
                             "model.residual=false"))
    if not d.residual and d.layers >= DEEP_STACK:
        found.append(Finding("advice", "deep-stack",
                             f"model.num_layers={d.layers} without residual connections: gradients fade through "
                             "deep LSTM stacks",
                             "set model.residual=true and keep train.clip_norm between 1.0 and 5.0"))
    if m.dropout > HIGH_DROPOUT and d.layers > 1:
        found.append(Finding("advice", "dropout-high", f"model.dropout={m.dropout:g} is high for an LSTM stack",
                             "the guide's range against overfitting is 0.1-0.3"))
    if not d.bias:
        found.append(Finding("advice", "bias-off", "model.bias=false saves parameters but can hurt fitting on "
                             "small data", "set model.bias=true unless the parameter budget is tight"))
    return found


def _window_length(d: Dims, prep: Prepared | None) -> list[Finding]:
    if d.L <= LONG_WINDOW:
        return []
    season = prep.season if prep is not None else None
    shorter = f"try data.window={2 * season} (two seasons of {season})" if season and 2 * season < d.L \
        else f"try data.window <= {LONG_WINDOW}"
    return [Finding("advice", "long-window",
                    f"data.window={d.L} steps is long for an LSTM: backpropagation runs through every step "
                    f"(gradients fade over hundreds) and step time grows with L (CPU: 12 ms at L=48, 25 at 96, "
                    "66 at 192, docs/PERFORMANCE.md)",
                    f"{shorter}, or a stride: resample the series to a coarser frequency")]


def _training(cfg: ForecastConfig) -> list[Finding]:
    if cfg.train.clip_norm is None:
        return [Finding("advice", "clipping-off", "train.clip_norm is off: one exploding gradient can turn the "
                        "loss NaN", "set train.clip_norm between 1.0 and 5.0 (1.0 is the default)")]
    return []


def _device_advice(cfg: ForecastConfig, d: Dims, dev: str, report: DoctorReport) -> list[Finding]:
    found, precision = [], cfg.train.precision
    if dev == "cuda":
        if d.B % 8:
            found.append(Finding("advice", "batch-multiple-of-8",
                                 f"train.batch_size={d.B} is not a multiple of 8: GPU matmul kernels (tensor "
                                 "cores) work in tiles of 8",
                                 f"use train.batch_size={max(8, 8 * round(d.B / 8))}"))
        size = f" ({report.series_bytes:,} bytes)" if report.series_bytes is not None else ""
        found.append(Finding("info", "pin-memory",
                             f"the scaled series{size} is copied to the GPU once and batches are gathered there by "
                             "index, so DataLoader(pin_memory=True) has nothing to speed up here"))
        small = d.hidden <= 128 and d.B <= 1024
        if precision in ("bf16", "fp16") and small:
            found.append(Finding("advice", "precision",
                                 f"train.precision={precision} on a small LSTM step: mixed precision measured "
                                 "0.6-0.7x the fp32 speed at hidden 64x2 on an H100 (docs/PERFORMANCE.md)",
                                 "use train.precision=fp32 (or tf32)"))
        elif precision == "fp32" and not small:  # 'auto' measures the candidates itself
            found.append(Finding("advice", "precision",
                                 f"train.precision={precision} on a wide LSTM step: bf16 autocast measured 1.6x "
                                 "faster at hidden 256x2, batch 1024 on an H100 (docs/PERFORMANCE.md)",
                                 "try train.precision=bf16 (or tf32) and compare the validation loss"))
    elif precision == "fp32" and cpu_has_bf16():
        found.append(Finding("advice", "precision",
                             "this CPU has bf16 instructions (AVX512-BF16/AMX): bf16 autocast measured 1.4x "
                             "faster LSTM steps at about the same accuracy on such CPUs (docs/PERFORMANCE.md)",
                             "try train.precision=bf16 and compare the validation loss"))
    elif precision == "bf16" and not cpu_has_bf16():
        found.append(Finding("advice", "precision", "train.precision=bf16 on a CPU without bf16 instructions: "
                             "it is emulated and likely slower than fp32", "use train.precision=fp32"))
    return found
