"""What `lstmcast train / evaluate / predict` do to a run folder (the CLI only parses and prints)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast import atomic
from lstmcast.errors import ConfigError, LstmcastError

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.config import ForecastConfig
    from lstmcast.forecaster import Forecaster
    from lstmcast.training.checkpoint import Checkpoint

log = logging.getLogger(__name__)
COMPLETE = "complete.json"  # written after every output: the run folder is whole (FAULTS T10)


def default_run_dir(root: str = "runs") -> Path:
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


def check_run_dir(run: Path, resuming: bool = False) -> None:
    """Refuse to overwrite a run folder that already holds a run (no data is ever lost)."""
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--run {run} is a file, not a folder: choose another path")
    if (run / COMPLETE).exists():
        raise ConfigError(f"run folder {run} already holds a trained run: choose another --run (or delete it)")
    if (run / "manifest.json").exists() and not resuming:
        raise ConfigError(f"run folder {run} already holds a trained run whose outputs are incomplete (interrupted "
                          f"while writing them, or saved by Forecaster.save): write them with `lstmcast train "
                          f"--resume {run}`, or choose another --run")
    if not resuming and any((run / "checkpoints").glob("step-*")):
        raise ConfigError(f"run folder {run} holds checkpoints of an unfinished run: continue it with "
                          f"`lstmcast train --resume {run}`, or choose another --run")


def outputs_missing(run: Path) -> bool:
    """The model is saved (manifest.json) but the outputs were not all written (no complete.json): T10."""
    return (run / "manifest.json").is_file() and not (run / COMPLETE).exists()


def write_outputs(fc: Forecaster, run: Path, series: Any = None) -> dict[str, Any]:
    """Backtest, forecast and plot into ``run``; return the metrics."""
    from lstmcast.report.plots import forecast_plot, loss_plot

    if getattr(fc, "shards_", None) is not None and series is None:  # data.shard_series: every rank's series
        return _write_shard_outputs(fc, run)
    metrics = fc.backtest(series)
    atomic.write_json(run / "metrics.json", metrics)
    src = fc._series(series)
    if fc.meta_.future_features:  # the horizon's covariates are not in the training data: predict --future
        import pandas as pd

        log.warning("no forecast.csv: the model reads the known-future covariates %s over the horizon, which "
                    "the training data does not hold; forecast with `lstmcast predict %s --future NEXT.csv`",
                    fc.meta_.future_features, run)
        cols = [fc.meta_.time_col] + ([fc.meta_.id_col] if fc.meta_.layout == "long" else []) + fc.meta_.targets
        forecast = pd.DataFrame({c: [] for c in cols})
    else:
        forecast = fc.predict(series)
        write_csv(forecast, run / "forecast.csv")
    forecast_plot(src, forecast, fc.meta_, fc.backtest_, run / "forecast.png")
    write_csv(fc.backtest_.frame(src, fc.meta_), run / "backtest.csv")  # every backtest forecast (H16)
    if fc.history_:
        best = getattr(getattr(fc, "fit_result_", None), "best_epoch", None)
        loss_plot(fc.history_, run / "loss.png", best)
    return metrics


def _write_shard_outputs(fc: Forecaster, run: Path) -> dict[str, Any]:
    """data.shard_series: metrics, forecast.csv and backtest.csv over every rank's series (inference/sharded.py);
    the forecast plot shows rank 0's series (the only ones this process holds)."""
    from lstmcast.report.plots import forecast_plot, loss_plot
    from lstmcast.inference.sharded import outputs

    merged, forecast, rows = outputs(fc)  # type: ignore[misc]  # rank 0: never None
    metrics = merged.metrics
    atomic.write_json(run / "metrics.json", metrics)
    if forecast is not None:
        write_csv(forecast, run / "forecast.csv")
        forecast_plot(fc._series(None), forecast, fc.meta_, fc.backtest_, run / "forecast.png",
                      total=len(fc.meta_.ids or []) or None)
    write_csv(rows, run / "backtest.csv")
    fc.backtest_ = merged  # every series' origins from here on (the summary counts them)
    if fc.history_:
        loss_plot(fc.history_, run / "loss.png", getattr(getattr(fc, "fit_result_", None), "best_epoch", None))
    return metrics


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    atomic.write_text(path, frame.to_csv(index=False))


def train_run(cfg: ForecastConfig, run: Path, callbacks: list[Callable[..., None]] | None = None,
              resume_from: Checkpoint | None = None) -> tuple[Forecaster, dict[str, Any]]:
    """Train (checkpointing into RUN/checkpoints, or continuing ``resume_from``) and write the run folder.

    Holds RUN/.lock throughout (T9). Order matters for T10: what exists only in memory (monitor, doctor)
    is written before manifest.json (the model is saved), everything derived from the saved model after
    it, and complete.json last, so an interruption anywhere leaves a folder `--resume` can finish."""
    from lstmcast.forecaster import Forecaster
    from lstmcast.run.lock import RunLock
    from lstmcast.training.monitor import Monitor

    with RunLock(run):
        check_run_dir(run, resuming=resume_from is not None)
        monitor = Monitor(run, cfg)  # TensorBoard in RUN/tb + the hidden-state probe; failures only warn (FAULTS U4)
        try:
            fc = Forecaster(cfg).fit(cfg.data.path, callbacks=[*(callbacks or []), monitor], run_dir=run,
                                     resume_from=resume_from)
            from lstmcast.doctor.report import render_text

            monitor.add_doctor(render_text(getattr(fc, "doctor_", None)))
        finally:
            monitor.close()
        monitor.save(run / "monitor.json")
        if getattr(fc, "doctor_", None) is not None:
            atomic.write_json(run / "doctor.json", fc.doctor_.as_dict())
        fc.save(run)
        metrics = finish_outputs(fc, run, monitor.findings())
    return fc, metrics


def train_rank(cfg: ForecastConfig, resume_from: Checkpoint | None = None) -> None:
    """A rank other than 0 of a distributed run: the same training, no run folder, no lock, no outputs."""
    from lstmcast.errors import InterruptedRun
    from lstmcast.forecaster import Forecaster
    from lstmcast.training import distributed

    try:
        fc = Forecaster(cfg).fit(cfg.data.path, resume_from=resume_from)
        interrupted = fc.fit_result_.stop_reason.startswith("interrupted")
        if getattr(fc, "shards_", None) is not None and not interrupted:
            from lstmcast.inference.sharded import outputs

            outputs(fc)  # data.shard_series: this rank's backtest and forecast, sent to rank 0
    finally:
        distributed.close()
    if interrupted:
        raise InterruptedRun(f"rank {fc.rank_}: {fc.fit_result_.stop_reason}; rank 0 wrote the checkpoint")


def finish_outputs(fc: Forecaster, run: Path, extra: list[Any] | None = None) -> dict[str, Any]:
    """Metrics, forecast, plots, diagnosis and report of a saved model, then complete.json (T10).

    SIGINT/SIGTERM here stop with InterruptedRun (exit 130) and the resume hint; nothing is half-written."""
    from lstmcast.report.html import try_write_report
    from lstmcast.training.signals import interrupt_on_signals

    hint = (f"stopped while writing the outputs of {run}; the trained model is saved: finish the outputs with "
            f"`lstmcast train --resume {run}`")
    with interrupt_on_signals(hint):
        metrics = write_outputs(fc, run)
        write_diagnosis(fc, run, extra, metrics)
        try_write_report(run)  # RUN/report.html; a failure only warns, the run folder is complete without it
        atomic.write_json(run / COMPLETE, {"completed": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return metrics


def resume_outputs(run: Path) -> tuple[Forecaster, dict[str, Any]]:
    """`train --resume` of a folder whose model is saved but whose outputs are not: write them, no retraining."""
    from lstmcast.forecaster import load_run
    from lstmcast.findings import Finding
    from lstmcast.run.lock import RunLock

    with RunLock(run):
        if not outputs_missing(run):
            check_run_dir(run, resuming=True)  # finished meanwhile: the same refusal as any finished run
        fc = load_run(run)
        if fc.config_.data.shard_series:  # every rank's series are needed, and the ranks have gone
            raise ConfigError(f"{run}: the model is saved but the outputs of this data.shard_series run were not all "
                              "written, and one process cannot rewrite them (each rank backtested its own series): "
                              f"forecast with `lstmcast predict {run} --data TABLE.parquet`, or train again")
        extra = []
        try:  # the monitor's findings were saved with monitor.json before the model
            found = atomic.parse_json((run / "monitor.json").read_bytes(), "monitor.json").get("findings", [])
            extra = [Finding(**f) for f in found]
        except (OSError, LstmcastError, TypeError, AttributeError):
            log.info("no monitor findings for the diagnosis of %s", run)
        return fc, finish_outputs(fc, run, extra)


def write_diagnosis(fc: Forecaster, run: Path, extra: list[Any] | None = None,
                    metrics: dict[str, Any] | None = None) -> None:
    """The learning-curve diagnosis (verdict, findings, fixes) to RUN/diagnosis.json; kept on ``fc.diagnosis_``.

    ``extra``: findings from elsewhere (the hidden-state monitor's) that the diagnosis lists too; ``metrics``:
    the backtest, whose loss to a baseline leads the diagnosis (headline.py)."""
    from lstmcast.doctor.diagnosis import data_info_of, diagnose
    from lstmcast.doctor.headline import with_headline

    info = data_info_of(getattr(fc, "prepared_", None), getattr(fc, "doctor_", None))
    fc.diagnosis_ = with_headline(diagnose(fc.history_, extra, config=fc.config_, data_info=info), metrics or {})
    record = fc.diagnosis_.as_dict()
    if metrics and metrics.get("series"):  # a table: which series the diagnosis speaks for (issue 20)
        record["series"] = metrics["series"]
    atomic.write_json(run / "diagnosis.json", record)


def evaluate_run(run: Path, data: str | None = None, name: str | None = None) -> tuple[dict[str, Any], Path]:
    """Backtest a saved run on ``data`` (default: its training data) into RUN/evaluations/<name>.json (H5).

    RUN/metrics.json stays the held-out backtest `train` wrote; an evaluation is labelled with its data
    file, that file's sha256 and the time, and never overwrites another."""
    from lstmcast.forecaster import load_run

    fc = load_run(run)
    metrics = fc.backtest(data)
    source = data if data is not None else fc.config_.data.path
    now = datetime.now(timezone.utc)
    record = {"kind": "evaluation", "note": "a backtest on the data named here, not the run's held-out backtest "
                                            "(that is metrics.json)",
              "data": os.path.abspath(source) if source else None, "data_sha256": file_sha256(source),
              "training_data": data is None, "created": now.isoformat(timespec="seconds"),
              "origins": int(len(fc.backtest_.origins)), "metrics": metrics}
    path = _evaluation_path(run, name, source, now)
    atomic.write_json(path, record)
    return metrics, path


def file_sha256(path: str | os.PathLike[str] | None) -> str | None:
    """sha256 of a file's bytes (None without a file): what identifies a data file across machines."""
    import hashlib

    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _evaluation_path(run: Path, name: str | None, source: str | None, now: datetime) -> Path:
    """RUN/evaluations/<name>.json, never an existing one: --name must be new, the default gets a counter."""
    import re

    folder = run / "evaluations"
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
            raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only (it names "
                              f"{folder}/<name>.json)")
        path = folder / f"{name.removesuffix('.json')}.json"
        if path.exists():
            raise ConfigError(f"{path} exists: choose another --name (evaluations are never overwritten)")
        return path
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(source).stem)[:60] if source else "data"
    base = f"{stem}-{now.strftime('%Y%m%d-%H%M%S')}"
    path, k = folder / f"{base}.json", 1
    while path.exists():
        k += 1
        path = folder / f"{base}-{k}.json"
    return path


def predict_run(run: Path, data: str | None = None, out: Path | None = None,
                future: str | None = None) -> tuple[pd.DataFrame, Path | None]:
    """Forecast into ``out`` (default RUN/forecast.csv); ``out`` of ``-`` writes the CSV to standard output
    and returns None as the path."""
    import sys

    from lstmcast.forecaster import load_run
    from lstmcast.errors import ConfigError

    to_stdout = out is not None and str(out) == "-"
    if out is not None and not to_stdout:
        try:
            atomic.check_target(out)  # refuse a device, FIFO, directory or symlink before any work (T11)
        except ConfigError as exc:
            raise ConfigError(f"--out: {exc} (or '-' for standard output)") from None
    fc = load_run(run)
    frame = fc.predict(data, future=future)
    if to_stdout:
        sys.stdout.write(frame.to_csv(index=False))
        sys.stdout.flush()
        return frame, None
    target = out or run / "forecast.csv"
    write_csv(frame, target)
    return frame, target
