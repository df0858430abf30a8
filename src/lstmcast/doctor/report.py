"""The doctor: the guide's knowledge applied to this config (and data) before any training.

It traces one training batch through the model with the config's real numbers (batch_first=True
everywhere), counts parameters per layer, estimates memory and FLOPs, optionally times a few real
training steps, and lists findings with a severity and a fix. ``train`` runs the same checks first
(:func:`preflight`) and refuses the same errors with the same text.

>>> rep = doctor({"data": {"target": "y", "features": [f"x{i}" for i in range(9)], "window": 20},
...               "model": {"hidden_size": 64, "num_layers": 2}, "train": {"batch_size": 32}})
>>> rep.shape("lstm output")
(32, 20, 64)
"""

from __future__ import annotations

import logging
import time
from io import StringIO
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.config import ForecastConfig
from lstmcast.data.calendar import calendar_for
from lstmcast.data.inputs import InputSpec, fit_inputs
from lstmcast.data.load import load_series
from lstmcast.data.prepare import auto_window, prepare, season_from_freq
from lstmcast.data.windows import Roles, Statics
from lstmcast.doctor.checks import config_findings, device_findings, model_findings
from lstmcast.doctor.record import DoctorReport, finding_text
from lstmcast.errors import ConfigError, DataError
from lstmcast.findings import Finding, split_message
from lstmcast.model.build import build_model
from lstmcast.model.estimate import Dims, InputRoles, flops_per_step, layer_counts, memory_bytes, n_parameters, trace
from lstmcast.model.sizing import resolve_model
from lstmcast.training.fit import epoch_batch

if TYPE_CHECKING:
    from lstmcast.data.prepare import Prepared
    from lstmcast.data.validate import SeriesSet
    from lstmcast.training.accel import Accel

log = logging.getLogger(__name__)

# error findings whose cause is the data (raised as DataError, exit 3, by train); the rest are ConfigError
DATA_CODES = frozenset({"series-too-short", "data-windows"})


# -- the entry points -----------------------------------------------------------------------------
def doctor(config: ForecastConfig | dict[str, Any] | None = None, data: Any = None, *,
           measure: bool = False) -> DoctorReport:
    """Check a config (and its data, when given or named in ``data.path``) before training.

    Without data, F comes from the config's target and feature columns and data findings are
    skipped. Invalid data (missing columns, gaps, ...) raises DataError as ``train`` would.
    ``measure=True`` times a few real training steps on this machine.
    """
    cfg, findings = config_findings(config)
    accel, dev_findings = device_findings(cfg)
    findings += dev_findings
    series = prep = None
    source = data if data is not None else cfg.data.path
    if source is not None:
        series = load_series(source, cfg)
        prep, data_findings = _prepare(cfg, series, accel)
        findings += data_findings
    report = _examine(cfg, series, prep, accel, findings)
    if measure and accel is not None:
        times = measure_step(report.dims, cfg, accel)
        report.step_seconds = float(np.median(times))
        report.step_spread = (float(np.percentile(times, 10)), float(np.percentile(times, 90)))
        report.step_samples = len(times)
    return report


def preflight(cfg: ForecastConfig, series: SeriesSet, prep: Prepared, accel: Accel) -> DoctorReport:
    """The doctor's checks at the start of ``fit``: log advice, refuse error findings with their text."""
    _, findings = config_findings(cfg)
    report = _examine(cfg, series, prep, accel, findings)
    for f in report.findings:
        if not f.is_error:
            log.log(logging.WARNING if f.severity == "warning" else logging.INFO, "doctor: %s", finding_text(f))
    if report.errors:
        codes = {f.code for f in report.errors}
        raise (DataError if codes <= DATA_CODES else ConfigError)(report.error_text())
    return report


def _prepare(cfg: ForecastConfig, series: SeriesSet, accel: Accel | None) -> tuple[Prepared | None, list[Finding]]:
    precision = accel.precision if accel is not None else cfg.train.precision
    try:
        return prepare(series, cfg.data, precision, cfg.model.id_embedding), []
    except DataError as exc:  # the very text train would stop with
        what, fix = split_message(str(exc))
        code = "series-too-short" if "too short" in what else "data-windows"
        return None, [Finding("error", code, what, fix)]


def config_dims(cfg: ForecastConfig) -> tuple[int, int, int]:
    """(F, T, L) from the config alone: targets + features + future features (the value channels; calendar
    channels come on top), the window or the automatic one."""
    d = cfg.data
    wide = d.format == "wide" and len(d.target) > 1
    T = 1 if wide or not d.target else len(d.target)
    F = (1 if wide else max(1, len(d.target))) + len(d.features) + len(d.future_features)
    season = d.season if d.season is not None else (season_from_freq(d.freq) if d.freq else None)
    return F, T, d.window if d.window is not None else auto_window(season, d.horizon)


def input_roles(cfg: ForecastConfig, series: SeriesSet | None, prep: Prepared | None) -> tuple[InputSpec, InputRoles]:
    """The model's input roles as fit derives them (data/inputs.py): the prepared data's, the data's when it
    failed to prepare, or the config's alone (its static features counted as numeric: which are categorical,
    and their vocabularies, the id embedding's among them, only the data tells)."""
    if prep is not None:
        spec = prep.inputs
    elif series is not None:
        spec = fit_inputs(series, cfg.data, cfg.model.id_embedding)
    else:
        d = cfg.data
        calendar = list(d.calendar) if isinstance(d.calendar, list) else \
            calendar_for(str(d.freq), d.calendar, isinstance(d.freq, int)) if d.freq else []
        spec = InputSpec(future_features=list(d.future_features), calendar=calendar,
                         static_numeric=list(d.static_features), static_mean=[0.0] * len(d.static_features),
                         static_std=[1.0] * len(d.static_features))
    T = series.n_targets if series is not None else config_dims(cfg)[1]
    ids = ("series id",) if spec.id_vocabulary is not None else ()
    roles = InputRoles(targets=T, past_features=len(cfg.data.features), future_features=len(spec.future_features),
                       calendar=tuple(spec.calendar), static_numeric=tuple(spec.static_numeric),
                       static_categorical=tuple(spec.static_categorical) + ids)
    return spec, roles


def _source(cfg: ForecastConfig, series: SeriesSet | None) -> str:
    if series is not None:
        return f"data: {len(series.ids)} series, {sum(series.lengths())} rows, frequency {series.freq}"
    statics = cfg.data.static_features or cfg.model.id_embedding
    return ("config only (no data): F from the config's target and feature columns"
            + ("; static features counted as numeric, categorical ones and model.id_embedding need the data"
               if statics else ""))


def _examine(cfg: ForecastConfig, series: SeriesSet | None, prep: Prepared | None, accel: Accel | None,
             findings: list[Finding]) -> DoctorReport:
    F, T, L = config_dims(cfg)
    spec, roles = input_roles(cfg, series, prep)
    if series is not None:
        F, T = len(series.channel_names), series.n_targets
    F += 2 * len(spec.calendar)  # x: the value channels, then each calendar feature's sin and cos (prepare)
    if prep is not None:
        L = prep.window
    windows = len(prep.index.train) if prep is not None else None
    # the same numbers fit resolves ``auto`` with (training/fit.py: F = every channel of the prepared tensor)
    cfg = cfg.model_copy(update={"model": resolve_model(cfg.model, windows, F, T, cfg.data.horizon, L,
                                                        **spec.model_sizes())})
    m = cfg.model
    B = cfg.train.batch_size
    if windows:  # fit clamps the batch to the windows an epoch draws: the budget is that batch's

        B = epoch_batch(B, windows, cfg.train.windows_per_epoch)
        if B < cfg.train.batch_size:
            findings = [*findings, Finding(
                "warning", "batch-above-windows", f"train.batch_size={cfg.train.batch_size} is above the {B:,} "
                f"training windows an epoch draws: training uses batches of {B} (every window once per step)",
                f"set train.batch_size <= {B}")]
    d = Dims(B=B, L=L, H=cfg.data.horizon, F=F, T=T, D=2 if m.bidirectional else 1,
             hidden=m.hidden_size, layers=m.num_layers, residual=m.residual, bias=m.bias, skip=m.linear_skip,
             Q=2 * len(m.levels) + 1 if m.levels else 0, K=spec.future_size, S=spec.static_size,
             cards=spec.cardinalities)
    params = n_parameters(d)
    device = str(accel.device) if accel is not None else cfg.train.device
    precision = accel.precision if accel is not None else cfg.train.precision
    report = DoctorReport(
        dims=d, trace=trace(d, m.window_norm, roles), layers=layer_counts(d, roles), n_parameters=params,
        memory_bytes={"fp32": memory_bytes(d, params, 4), "bf16": memory_bytes(d, params, 2)},
        flops_per_step=flops_per_step(d), device=device, precision=precision, source=_source(cfg, series))
    if prep is not None:
        report.train_windows, report.val_windows = len(prep.index.train), len(prep.index.val)
        cap = cfg.train.val_windows
        report.val_sample = cap if cap is not None and cap < report.val_windows else None
        report.series_bytes = int(prep.scaled.nbytes)
    report.findings = findings + model_findings(cfg, report, series, prep)
    return report


def measure_step(d: Dims, cfg: ForecastConfig, accel: Accel, steps: int = 30, warmup: int = 3,
                 budget_s: float = 3.0, warmup_s: float = 0.5) -> list[float]:
    """Seconds of each timed real training step (gather, forward, backward, clip, AdamW) on random data.

    Warm-up: at least ``warmup`` untimed steps and ``warmup_s`` seconds (the first steps pay one-off kernel
    selection and allocation: one run reported 1612 ms a step, the next 21 ms); then up to ``steps`` timed ones
    (at least 5) within ``budget_s`` seconds. The caller reports their median and spread."""
    import torch

    from lstmcast.training import loop
    from lstmcast.training.records import TrainData

    m = resolve_model(cfg.model, None, d.F, d.T, d.H, d.L)  # dropout auto -> a number (d holds the width)
    m = m.model_copy(update={"hidden_size": d.hidden, "dropout": m.dropout if d.layers > 1 else 0.0})
    dev = accel.device
    model = build_model(m, d.F, d.T, d.H, d.L, future_size=d.K, static_size=d.S, static_cardinalities=d.cards).to(dev)
    rows = d.L + d.H + d.B
    series = torch.randn(rows, d.F, device=dev)
    idx = torch.arange(d.B + 1, device=dev)
    roles = Roles(d.L, d.H, d.T, tuple(range(d.F - d.K, d.F)))  # the known-future channels are the last K
    statics = Statics(table=torch.zeros(1, d.static_in, device=dev),  # one series, every code 0 (unknown)
                      row_series=torch.zeros(rows, dtype=torch.long, device=dev)) if d.static_in else None
    trainer = loop.build(model, cfg.train, accel, TrainData.of(series, idx, idx, roles, statics))
    batch = torch.arange(d.B, device=dev)
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(accel.threads)
    times: list[float] = []
    try:
        start, done = time.perf_counter(), 0
        while done < warmup or time.perf_counter() - start < warmup_s:
            float(trainer.train_step(batch)[0])
            done += 1
        while len(times) < steps:
            t0 = time.perf_counter()
            loss, _, _ = trainer.train_step(batch)
            float(loss)  # waits for the device, like the per-epoch sync of the real loop
            times.append(time.perf_counter() - t0)
            if len(times) >= 5 and sum(times) > budget_s:
                break
    finally:
        torch.set_num_threads(threads)
    return times


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def render(report: DoctorReport) -> list[Any]:
    """Rich tables of the report, for the CLI to print."""
    from rich.table import Table

    d = report.dims
    shapes = Table(title=f"Shape trace of one training batch (batch_first=True; {report.source})")
    for col in ("tensor", "shape", "legend", "note"):
        shapes.add_column(col)
    for row in report.trace:
        shapes.add_row(row.name, str(row.shape), row.legend, row.note)
    params = Table(title="Parameters")
    for col, justify in (("layer", "left"), ("parameters", "right"), ("how", "left")):
        params.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in report.layers:
        params.add_row(c.name, f"{c.params:,}", c.detail)
    params.add_row("total", f"{report.n_parameters:,}", "== sum(p.numel()) of the built model")
    budget = Table(title="Budget")
    budget.add_column("quantity")
    budget.add_column("value", justify="right")
    wpp = report.windows_per_parameter
    step = "not measured (--measure)"
    if report.step_seconds is not None and report.step_spread is not None:
        lo, hi = report.step_spread
        busy = " (wide spread: the machine is busy, timings vary)" if hi > 2 * lo else ""
        step = (f"{report.step_seconds * 1e3:.2f} ms median of {report.step_samples} steps after a warm-up "
                f"(10-90%: {lo * 1e3:.2f}-{hi * 1e3:.2f} ms){busy}")
    for name, value in (
            ("training / validation windows", "no data" if report.train_windows is None
             else f"{report.train_windows:,} / {report.val_windows:,}" + (
                 f" (validates on a sample of {report.val_sample:,}: train.val_windows)" if report.val_sample else "")),
            ("windows per parameter", "no data" if wpp is None else f"{wpp:.3g}"),
            (f"training memory at batch {d.B}, fp32 / bf16 (estimate)",
             f"{_size(report.memory_bytes['fp32'])} / {_size(report.memory_bytes['bf16'])}"),
            ("resident scaled series", "no data" if report.series_bytes is None else _size(report.series_bytes)),
            ("FLOPs per training step (matmuls, fwd + bwd)", f"{report.flops_per_step / 1e9:.3g} G"),
            (f"measured step time on {report.device} ({report.precision})", step)):
        budget.add_row(name, value)
    found = Table(title="Findings")
    for col in ("severity", "finding", "fix"):
        found.add_column(col)
    for f in sorted(report.findings, key=lambda f: _ORDER.index(f.severity)):
        found.add_row(f"{f.severity}\n[dim]{f.code}[/dim]", f.message, f.fix)
    return [shapes, params, budget, found]


_ORDER = ["error", "warning", "advice", "info"]


def render_text(report: DoctorReport | None) -> str | None:
    """The report's tables as plain text (for TensorBoard), or None when rich is missing or no report."""
    if report is None:
        return None
    try:
        from rich.console import Console
    except ImportError as exc:
        log.info("no doctor report text (%s)", exc)
        return None
    console = Console(file=StringIO(), width=140, color_system=None)
    for table in render(report):
        console.print(table)
    return console.file.getvalue()
