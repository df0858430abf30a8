"""A run folder's outputs from a fitted Forecaster: metrics, forecast, backtest.csv, plots, diagnosis, report.

Below the facade, so ``Forecaster.save`` writes the same complete folder `lstmcast train` does; workflow.py
adds what only the command has (the lock, the monitor, signals, complete.json after an interruption).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lstmcast import atomic
from lstmcast.doctor.headline import with_headline
from lstmcast.report.plots import forecast_plot, loss_plot

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.data.validate import SeriesSet
    from lstmcast.doctor.diagnosis import Diagnosis
    from lstmcast.doctor.report import DoctorReport
    from lstmcast.inference.backtest import Backtest
    from lstmcast.run.meta import RunMeta
    from lstmcast.training.accel import Accel
    from lstmcast.training.loop import FitResult, Trainer
    from lstmcast.training.world import World

log = logging.getLogger("lstmcast.workflow")  # the name these messages always had
COMPLETE = "complete.json"  # written after every output: the run folder is whole (FAULTS T10)

Stage = Callable[[str], None]


def _quiet(text: str) -> None:
    """No progress display: stages pass silently."""


@dataclass
class TrainingReport:
    """What ``Forecaster.fit`` learned beyond the run record (``Forecaster.training_``; None for a run loaded
    from its folder): the outputs, the command's summary and the tests read it."""

    trainer: Trainer
    result: FitResult  # best epoch, stop reason, history
    accel: Accel  # device and precision, "auto" settled
    prepared: Prepared  # the data trained on: scaled table, splits, window indices
    doctor: DoctorReport  # the preflight's findings and sizes
    coverage: dict[str, Any] | None  # a table's series counts (data.coverage.series_counts); None for one series
    data_file: str | None  # the file trained on: save() records its sha256 when it is data.path (FAULTS R9)
    world: World  # one process, or the ranks under torchrun (world.sharded: each rank holds its own series,
    # the outputs are gathered on the main rank)


class Fitted(Protocol):
    """What the outputs use of a fitted ``lstmcast.forecaster.Forecaster`` (a layer above this module)."""

    training_: TrainingReport | None
    backtest_: Backtest | None
    diagnosis_: Diagnosis | None

    @property
    def config_(self) -> ForecastConfig: ...

    @property
    def meta_(self) -> RunMeta: ...

    @property
    def history_(self) -> list[dict[str, Any]]: ...

    def series(self, data: Any = None) -> SeriesSet: ...

    def backtest(self, data: Any = None) -> dict[str, Any]: ...

    @property
    def last_backtest(self) -> Backtest: ...

    def predict(self, data: Any = None) -> pd.DataFrame: ...


def _best_epoch(fc: Fitted) -> int | None:
    """The epoch whose weights were kept, when this process trained the model (None for a loaded run)."""
    return fc.training_.result.best_epoch if fc.training_ is not None else None


def write_outputs(fc: Fitted, run: Path, series: Any = None, stage: Stage = _quiet) -> dict[str, Any]:
    """Backtest, forecast and plot into ``run``; return the metrics. ``stage(text)`` is told what begins."""
    stage("backtest")
    world = fc.training_.world if fc.training_ is not None else None  # None: loaded from a folder, one process
    if world is not None and world.sharded and series is None:  # data.shard_series: every rank's series
        return _write_shard_outputs(fc, run)
    metrics = fc.backtest(series)
    stage("forecast and plots")
    atomic.write_json(run / "metrics.json", metrics)
    src = fc.series(series)
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
    bt = fc.last_backtest
    forecast_plot(src, forecast, fc.meta_, bt, run / "forecast.png")
    write_csv(bt.frames(src, fc.meta_, CSV_ROWS), run / "backtest.csv")  # every backtest forecast (H16)
    if fc.history_:
        loss_plot(fc.history_, run / "loss.png", _best_epoch(fc))
    return metrics


def _write_shard_outputs(fc: Fitted, run: Path) -> dict[str, Any]:
    """data.shard_series: metrics, forecast.csv and backtest.csv over every rank's series (inference/sharded.py);
    the forecast plot shows rank 0's series (the only ones this process holds)."""
    from lstmcast.inference.sharded import outputs

    merged, forecast, rows = outputs(fc)  # type: ignore[misc]  # rank 0: never None
    metrics = merged.metrics
    atomic.write_json(run / "metrics.json", metrics)
    if forecast is not None:
        write_csv(forecast, run / "forecast.csv")
        forecast_plot(fc.series(None), forecast, fc.meta_, fc.backtest_, run / "forecast.png",
                      total=len(fc.meta_.ids or []) or None)
    write_csv(rows, run / "backtest.csv")
    fc.backtest_ = merged  # every series' origins from here on (the summary counts them)
    if fc.history_:
        loss_plot(fc.history_, run / "loss.png", _best_epoch(fc))
    return metrics


CSV_ROWS = 100_000  # rows formatted at a time when a CSV is written


def write_csv(frame: pd.DataFrame | Iterable[pd.DataFrame], path: str | os.PathLike[str]) -> None:
    """``frame``, or its parts in order (header from the first), as one CSV streamed to the file CSV_ROWS rows
    at a time: ``to_csv`` of a whole 1.1M-row backtest.csv held a 120 MB string and encoded a second copy of it,
    the peak of a 20k-series run (docs/FAULTS.md R18)."""
    import pandas as pd

    parts = _row_parts(frame) if isinstance(frame, pd.DataFrame) else frame
    atomic.write_bytes(path, (part.to_csv(index=False, header=i == 0).encode("utf-8") for i, part in enumerate(parts)))


def _row_parts(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for start in range(0, max(len(frame), 1), CSV_ROWS):
        yield frame.iloc[start:start + CSV_ROWS]


def write_diagnosis(fc: Fitted, run: Path, extra: list[Any] | None = None,
                    metrics: dict[str, Any] | None = None) -> None:
    """The learning-curve diagnosis (verdict, findings, fixes) to RUN/diagnosis.json; kept on ``fc.diagnosis_``.

    ``extra``: findings from elsewhere (the hidden-state monitor's) that the diagnosis lists too; ``metrics``:
    the backtest, whose loss to a baseline leads the diagnosis (headline.py)."""
    from lstmcast.doctor.diagnosis import data_info_of, diagnose

    training = fc.training_
    info = data_info_of(training.prepared, training.doctor) if training is not None else None
    diagnosis = with_headline(diagnose(fc.history_, extra, config=fc.config_, data_info=info), metrics or {})
    fc.diagnosis_ = diagnosis
    record = diagnosis.as_dict()
    if metrics and metrics.get("series"):  # a table: which series the diagnosis speaks for (issue 20)
        record["series"] = metrics["series"]
    atomic.write_json(run / "diagnosis.json", record)


def write_all(fc: Fitted, run: Path, extra: list[Any] | None = None, stage: Stage = _quiet) -> dict[str, Any]:
    """Every output of a saved model: metrics, forecast, backtest.csv, plots, diagnosis, report.html, then
    complete.json (the folder is whole). ``extra``: the monitor's findings for the diagnosis."""
    from lstmcast.report.html import try_write_report

    metrics = write_outputs(fc, run, stage=stage)
    stage("diagnosis and report")
    write_diagnosis(fc, run, extra, metrics)
    try_write_report(run)  # RUN/report.html; a failure only warns, the run folder is complete without it
    atomic.write_json(run / COMPLETE, {"completed": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return metrics
