"""What `lstmcast train / evaluate / predict` do to a run folder (the CLI only parses and prints)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import atomic
from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from .config import ForecastConfig
    from .forecaster import Forecaster
    from .training.checkpoint import Checkpoint

log = logging.getLogger(__name__)


def default_run_dir(root: str = "runs") -> Path:
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


def check_run_dir(run: Path, resuming: bool = False) -> None:
    """Refuse to overwrite a run folder that already holds a run (no data is ever lost)."""
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--run {run} is a file, not a folder: choose another path")
    if (run / "manifest.json").exists():
        raise ConfigError(f"run folder {run} already holds a trained run: choose another --run (or delete it)")
    if not resuming and any((run / "checkpoints").glob("step-*")):
        raise ConfigError(f"run folder {run} holds checkpoints of an unfinished run: continue it with "
                          f"`lstmcast train --resume {run}`, or choose another --run")


def write_outputs(fc: Forecaster, run: Path, series: Any = None) -> dict[str, Any]:
    """Backtest, forecast and plot into ``run``; return the metrics."""
    from .reporting import forecast_plot, loss_plot

    metrics = fc.backtest(series)
    atomic.write_json(run / "metrics.json", metrics)
    forecast = fc.predict(series)
    write_csv(forecast, run / "forecast.csv")
    src = fc._series(series)
    forecast_plot(src, forecast, fc.meta_, fc.backtest_, run / "forecast.png")
    write_csv(fc.backtest_.frame(src, fc.meta_), run / "backtest.csv")  # every backtest forecast (H16)
    if fc.history_:
        best = getattr(getattr(fc, "fit_result_", None), "best_epoch", None)
        loss_plot(fc.history_, run / "loss.png", best)
    return metrics


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    atomic.write_text(path, frame.to_csv(index=False))


def train_run(cfg: ForecastConfig, run: Path, callbacks: list[Callable[..., None]] | None = None,
              resume_from: Checkpoint | None = None) -> tuple[Forecaster, dict[str, Any]]:
    """Train (checkpointing into RUN/checkpoints, or continuing ``resume_from``) and write the run folder."""
    from .forecaster import Forecaster
    from .report import try_write_report
    from .training.monitor import Monitor

    check_run_dir(run, resuming=resume_from is not None)
    monitor = Monitor(run, cfg)  # TensorBoard in RUN/tb + the hidden-state probe; failures only warn (FAULTS U4)
    try:
        fc = Forecaster(cfg).fit(cfg.data.path, callbacks=[*(callbacks or []), monitor], run_dir=run,
                                 resume_from=resume_from)
        monitor.add_doctor(getattr(fc, "doctor_", None))
    finally:
        monitor.close()
    fc.save(run)
    monitor.save(run / "monitor.json")
    if getattr(fc, "doctor_", None) is not None:
        atomic.write_json(run / "doctor.json", fc.doctor_.as_dict())
    metrics = write_outputs(fc, run)
    write_diagnosis(fc, run, monitor.findings())
    try_write_report(run)  # RUN/report.html; a failure only warns, the run folder is complete without it
    return fc, metrics


def write_diagnosis(fc: Forecaster, run: Path, extra: list[Any] | None = None) -> None:
    """The learning-curve diagnosis (verdict, findings, fixes) to RUN/diagnosis.json; kept on ``fc.diagnosis_``.

    ``extra``: findings from elsewhere (the hidden-state monitor's) that the diagnosis lists too."""
    from .diagnosis import data_info_of, diagnose

    info = data_info_of(getattr(fc, "prepared_", None), getattr(fc, "doctor_", None))
    fc.diagnosis_ = diagnose(fc.history_, extra, config=fc.config_, data_info=info)
    atomic.write_json(run / "diagnosis.json", fc.diagnosis_.as_dict())


def evaluate_run(run: Path, data: str | None = None) -> dict[str, Any]:
    from .artifacts import load_run

    fc = load_run(run)
    metrics = fc.backtest(data)
    atomic.write_json(run / "metrics.json", metrics)
    return metrics


def predict_run(run: Path, data: str | None = None, out: Path | None = None) -> tuple[pd.DataFrame, Path]:
    from .artifacts import load_run

    fc = load_run(run)
    frame = fc.predict(data)
    target = out or run / "forecast.csv"
    write_csv(frame, target)
    return frame, target
