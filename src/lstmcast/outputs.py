"""A run folder's outputs from a fitted Forecaster: metrics, forecast, backtest.csv, plots, diagnosis, report.

Below the facade, so ``Forecaster.save`` writes the same complete folder `lstmcast train` does; workflow.py
adds what only the command has (the lock, the monitor, signals, complete.json after an interruption).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast import atomic

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("lstmcast.workflow")  # the name these messages always had
COMPLETE = "complete.json"  # written after every output: the run folder is whole (FAULTS T10)

Stage = Callable[[str], None]


def _quiet(text: str) -> None:
    """No progress display: stages pass silently."""


def write_outputs(fc: Any, run: Path, series: Any = None, stage: Stage = _quiet) -> dict[str, Any]:
    """Backtest, forecast and plot into ``run``; return the metrics. ``stage(text)`` is told what begins."""
    from lstmcast.report.plots import forecast_plot, loss_plot

    stage("backtest")
    world = getattr(fc, "world_", None)  # None: loaded from a folder, one process
    if world is not None and world.sharded and series is None:  # data.shard_series: every rank's series
        return _write_shard_outputs(fc, run)
    metrics = fc.backtest(series)
    stage("forecast and plots")
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
    write_csv(fc.backtest_.frames(src, fc.meta_, CSV_ROWS), run / "backtest.csv")  # every backtest forecast (H16)
    if fc.history_:
        best = getattr(getattr(fc, "fit_result_", None), "best_epoch", None)
        loss_plot(fc.history_, run / "loss.png", best)
    return metrics


def _write_shard_outputs(fc: Any, run: Path) -> dict[str, Any]:
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


def write_diagnosis(fc: Any, run: Path, extra: list[Any] | None = None,
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


def write_all(fc: Any, run: Path, extra: list[Any] | None = None, stage: Stage = _quiet) -> dict[str, Any]:
    """Every output of a saved model: metrics, forecast, backtest.csv, plots, diagnosis, report.html, then
    complete.json (the folder is whole). ``extra``: the monitor's findings for the diagnosis."""
    from datetime import datetime, timezone

    from lstmcast.report.html import try_write_report

    metrics = write_outputs(fc, run, stage=stage)
    stage("diagnosis and report")
    write_diagnosis(fc, run, extra, metrics)
    try_write_report(run)  # RUN/report.html; a failure only warns, the run folder is complete without it
    atomic.write_json(run / COMPLETE, {"completed": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return metrics
