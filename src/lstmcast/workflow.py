"""What `lstmcast train / evaluate / predict` do to a run folder (the CLI only parses and prints)."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast import atomic
from lstmcast.doctor.report import render_text
from lstmcast.errors import ConfigError, InterruptedRun, LstmcastError
from lstmcast.findings import Finding
from lstmcast.forecaster import Forecaster, load_run
from lstmcast.outputs import COMPLETE, Stage, write_all, write_csv
from lstmcast.progress import announce
from lstmcast.run.lock import RunLock
from lstmcast.run.manifest import file_sha256
from lstmcast.training.monitor import Monitor
from lstmcast.training.signals import interrupt_on_signals

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.config import ForecastConfig
    from lstmcast.forecaster import Forecaster
    from lstmcast.training.checkpoint import Checkpoint

log = logging.getLogger(__name__)


def default_run_dir(root: str = "runs") -> Path:
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


_TUNING_FILES = ("study.db", "trials.csv", "best.yaml", "summary.json")  # what `lstmcast tune` writes


def check_run_dir(run: Path, resuming: bool = False) -> None:
    """Refuse to overwrite a run folder that already holds a run (no data is ever lost)."""
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--run {run} is a file, not a folder: choose another path")
    tuning = [name for name in _TUNING_FILES if (run / name).exists()] + \
        (["workers/"] if any((run / "workers").glob("slot-*.lock")) else [])
    if tuning:
        raise ConfigError(f"{run} is a tuning study folder (it holds {', '.join(tuning)}), not a run folder: give "
                          f"`lstmcast train` a new --run; to train the study's best trial: lstmcast train -c "
                          f"{run / 'best.yaml'} --run <new folder>")
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


def train_run(cfg: ForecastConfig, run: Path, callbacks: list[Callable[..., None]] | None = None,
              resume_from: Checkpoint | None = None) -> tuple[Forecaster, dict[str, Any]]:
    """Train (checkpointing into RUN/checkpoints, or continuing ``resume_from``) and write the run folder.

    Holds RUN/.lock throughout (T9). Order matters for T10: what exists only in memory (monitor, doctor)
    is written before manifest.json (the model is saved), everything derived from the saved model after
    it, and complete.json last, so an interruption anywhere leaves a folder `--resume` can finish."""
    # the lock is released last: the signal handler's InterruptedRun leaves first
    with RunLock(run), ExitStack() as after_training:
        check_run_dir(run, resuming=resume_from is not None)
        monitor = Monitor(run, cfg)  # TensorBoard in RUN/tb + the hidden-state probe; failures only warn (FAULTS U4)
        if resume_from is not None:  # the history up to the checkpoint: monitor.json is continued, never lost
            monitor.resume(resume_from.meta, _saved_monitor(run))
        try:
            fc = Forecaster(cfg).fit(cfg.data.path, callbacks=[*(callbacks or []), monitor], run_dir=run,
                                     resume_from=resume_from)
            # R13: from the end of training to the outputs' own handler, SIGINT/SIGTERM exit 130 with the hint
            # (the default SIGTERM ended the process with 143 and no word between fc.save and finish_outputs)
            after_training.enter_context(interrupt_on_signals(
                f"stopped after training, before the outputs of {run} were all written; finish them with "
                f"`lstmcast train --resume {run}`"))
            monitor.add_doctor(render_text(fc.training_.doctor if fc.training_ is not None else None))
        finally:
            monitor.close()
        monitor.save(run / "monitor.json")
        if fc.training_ is not None:
            atomic.write_json(run / "doctor.json", fc.training_.doctor.as_dict())
        fc.save(run, outputs=False)  # the outputs below: with the monitor's findings, under the signal handler
        metrics = finish_outputs(fc, run, monitor.findings(), stage=lambda text: announce(callbacks, text))
    return fc, metrics


def _saved_monitor(run: Path) -> dict[str, Any] | None:
    """RUN/monitor.json as saved, or None (absent or unreadable: a resume then starts a new history)."""
    try:
        saved = atomic.parse_json((run / "monitor.json").read_bytes(), "monitor.json")
    except (OSError, LstmcastError):
        return None
    return saved if isinstance(saved, dict) else None


def train_rank(cfg: ForecastConfig, resume_from: Checkpoint | None = None) -> None:
    """A rank other than 0 of a distributed run: the same training, no run folder, no lock, no outputs."""
    from lstmcast.training import distributed

    try:
        fc = Forecaster(cfg).fit(cfg.data.path, resume_from=resume_from, progress=False)  # rank 0 shows it
        training = fc.trained
        interrupted = training.result.stop_reason.startswith("interrupted")
        if training.world.sharded and not interrupted:
            from lstmcast.inference.sharded import outputs

            outputs(fc)  # data.shard_series: this rank's backtest and forecast, sent to rank 0
    finally:
        distributed.close()
    if interrupted:
        raise InterruptedRun(f"rank {training.world.rank}: {training.result.stop_reason}; rank 0 wrote the checkpoint")


def finish_outputs(fc: Forecaster, run: Path, extra: list[Any] | None = None,
                   stage: Stage | None = None) -> dict[str, Any]:
    """Metrics, forecast, plots, diagnosis and report of a saved model, then complete.json (T10).

    SIGINT/SIGTERM here stop with InterruptedRun (exit 130) and the resume hint; nothing is half-written.
    ``stage(text)``: told each stage as it begins (the progress display)."""
    hint = (f"stopped while writing the outputs of {run}; the trained model is saved: finish the outputs with "
            f"`lstmcast train --resume {run}`")
    with interrupt_on_signals(hint):
        remove_stale_temps(run)  # R12: temp files an earlier killed write left; under the run lock
        return write_all(fc, run, extra, stage) if stage is not None else write_all(fc, run, extra)


def remove_stale_temps(run: Path) -> None:
    """R12: temp files (``.NAME.XXXX.tmp``, atomic.py) that an earlier process killed mid-write left in RUN.
    Called under the run lock, so no live writer owns them; a finished run keeps no hidden file."""
    for path in run.glob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


def resume_outputs(run: Path) -> tuple[Forecaster, dict[str, Any]]:
    """`train --resume` of a folder whose model is saved but whose outputs are not: write them, no retraining."""
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


def evaluate_run(run: Path, data: str | None = None, name: str | None = None, start: Any = None,
                 stride: int | None = None, n_windows: int | None = None,
                 refit: bool = False) -> tuple[dict[str, Any], Path]:
    """Backtest a saved run on ``data`` (default: its training data) into RUN/evaluations/<name>.json, and
    every window's forecasts (with intervals, cutoff and actuals) into <name>.csv beside it (H5).

    ``start`` / ``stride`` / ``n_windows`` / ``refit`` steer the windows (``Forecaster.backtest``); at their
    defaults this is the backtest `train` wrote. RUN/metrics.json stays the held-out backtest `train` wrote; an
    evaluation is labelled with its data file, that file's sha256, its windows and the time, and never
    overwrites another."""
    fc = load_run(run)
    path = _evaluation_path(run, name, data if data is not None else fc.config_.data.path,
                            datetime.now(timezone.utc))
    frame = fc.backtest_forecasts(data, start=start, stride=stride, n_windows=n_windows, refit=refit)
    bt = fc.last_backtest
    metrics = bt.metrics
    source = data if data is not None else fc.config_.data.path
    now = datetime.now(timezone.utc)
    record = {"kind": "evaluation", "note": "a backtest on the data named here, not the run's held-out backtest "
                                            "(that is metrics.json)",
              "data": os.path.abspath(source) if source else None, "data_sha256": file_sha256(source),
              "training_data": data is None, "created": now.isoformat(timespec="seconds"),
              "origins": int(len(bt.origins)),
              "windows": {"start": None if start is None else str(start), "stride": stride, "n_windows": n_windows,
                          "refit": refit},
              "forecasts": path.with_suffix(".csv").name, "metrics": metrics}
    write_csv(frame, path.with_suffix(".csv"))
    atomic.write_json(path, record)
    return metrics, path


def _evaluation_path(run: Path, name: str | None, source: str | None, now: datetime) -> Path:
    """RUN/evaluations/<name>.json, never an existing one: --name must be new, the default gets a counter."""
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


def update_run(run: Path, data: str) -> dict[str, Any]:
    """`lstmcast update`: the run's carried states advanced by ``data``'s new rows and written back (atomically,
    under the run's lock: one writer at a time); returns the update's summary."""
    from lstmcast.forecaster import load_run
    from lstmcast.run.lock import RunLock

    with RunLock(run):
        fc = load_run(run)
        return fc.update(data).as_dict()


def predict_run(run: Path, data: str | None = None, out: str | os.PathLike[str] | None = None,
                future: str | None = None) -> tuple[pd.DataFrame, Path | None]:
    """Forecast into ``out`` (default RUN/forecast.csv); ``out`` of ``-`` writes the CSV to standard output
    and returns None as the path."""
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
    target = Path(out) if out is not None else run / "forecast.csv"  # out checked above: not 'dir/'
    write_csv(frame, target)
    return frame, target
