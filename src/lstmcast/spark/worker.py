"""The Python-worker side of a Spark job: pandas in, pandas out, no pyspark import.

Each Spark group holds every row of its series (the group key is a hash of the series id, so a series is
never split); this module turns one group into forecasts (or backtest rows) plus one error row per series
that could not be forecast. The run folder is loaded once per Python worker from its path and kept in a
module-level cache keyed by (path, sha256 of manifest.json): the closure Spark ships carries only those two
strings, never the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lstmcast.errors import CheckpointError, LstmcastError
from lstmcast.forecaster import Forecaster, load_run
from lstmcast.inference.predict import load_new_series, run_backtest
from lstmcast.model.quantiles import interval_columns
from lstmcast.run.meta import RunMeta

log = logging.getLogger(__name__)
ERROR_COL = "lstmcast_error"  # the combined frame's column: null on forecast rows, the reason on error rows
REASON_CHARS = 400  # an error row quotes at most this much of the message (no long echo of user data)
_RUNS: dict[tuple[str, str], Forecaster] = {}


def manifest_digest(run: str | os.PathLike[str]) -> str:
    """sha256 of RUN/manifest.json: it lists the sha256 of every other file, so it names the run's exact bytes."""
    path = Path(run) / "manifest.json"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise CheckpointError(f"{run}: cannot read manifest.json ({exc.strerror}): pass a run folder written by "
                              "`lstmcast train`") from None


def cached_run(path: str, digest: str, threads: int) -> Forecaster:
    """The run at ``path``, loaded (with its hashes verified) once per Python worker; refused when the folder
    no longer has the bytes the driver planned with (a run overwritten while the job runs)."""
    key = (path, digest)
    fc = _RUNS.get(key)
    if fc is None:
        found = manifest_digest(path)
        if found != digest:
            raise CheckpointError(f"{path} changed after the Spark job started (manifest.json sha256 {found[:12]} "
                                  f"!= {digest[:12]}): rerun the job against one fixed run folder")
        import torch

        torch.set_num_threads(threads)  # one thread per task: Spark runs one task per core
        fc = _RUNS[key] = load_run(path)  # load_run checks every file against manifest.json
    return fc


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def isolate(ids: list[str], attempt: Callable[[list[str]], pd.DataFrame]) -> tuple[list[pd.DataFrame],
                                                                                   list[tuple[str, str]]]:
    """Run ``attempt`` on all ``ids`` at once; when it raises an lstmcast error, on each half, down to the
    single series that fail: the good series' frames and an (id, reason) per bad series. A batch with b bad
    series of n costs about b * log2(n) extra calls, and a clean batch exactly one."""
    try:
        return [attempt(ids)], []
    except LstmcastError as exc:
        if len(ids) == 1:
            return [], [(ids[0], _reason(exc))]
    mid = len(ids) // 2
    good_a, bad_a = isolate(ids[:mid], attempt)
    good_b, bad_b = isolate(ids[mid:], attempt)
    return good_a + good_b, bad_a + bad_b


def _combined(good: list[pd.DataFrame], bad: list[tuple[str, str]], id_col: str,
              columns: list[str]) -> pd.DataFrame:
    """Forecast rows with a null error column, then one row per bad series with only its id and reason."""
    parts = [g for g in good if len(g)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in columns}, dtype=object)
    out = out.reindex(columns=columns)
    out[ERROR_COL] = None
    if bad:
        out = pd.concat([out, _error_rows(bad, id_col, out, columns)], ignore_index=True)
    for c in out.columns:  # text as plain objects: pyspark's Arrow writer refuses pandas' Arrow-backed strings
        if pd.api.types.is_string_dtype(out[c].dtype):
            out[c] = out[c].astype(object)
    return out


def _error_rows(bad: list[tuple[str, str]], id_col: str, like: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The bad series' rows: id and reason, every other cell null in the forecast column's own type (so the
    concatenated column keeps its type: NaT for times, <NA> for integer steps)."""
    n = len(bad)
    cols: dict[str, object] = {}
    for c in columns:
        dtype = like[c].dtype
        if c == id_col:
            cols[c] = np.array([b[0] for b in bad], dtype=object)
        elif dtype.kind in "iu":
            cols[c] = pd.array([None] * n, dtype="Int64")
        elif dtype.kind in "fM" or isinstance(dtype, pd.DatetimeTZDtype):
            cols[c] = pd.Series([None] * n, dtype=dtype)
        else:
            cols[c] = np.full(n, None, dtype=object)
    cols[ERROR_COL] = np.array([b[1] for b in bad], dtype=object)
    return pd.DataFrame(cols)


def predict_group(fc: Forecaster, rows: pd.DataFrame, future: pd.DataFrame | None, columns: list[str],
                  chunk: int) -> pd.DataFrame:
    """``Forecaster.predict`` of every series in ``rows`` (``chunk`` series at a time), bad series isolated."""
    id_col = fc.meta_.id_col
    rows = rows.assign(**{id_col: rows[id_col].astype(str)})
    ids = list(dict.fromkeys(rows[id_col].tolist()))  # first appearance, as Forecaster.predict orders them
    if future is not None:
        future = future.assign(**{id_col: future[id_col].astype(str)})

    def attempt(part: list[str]) -> pd.DataFrame:
        if len(part) == len(ids):
            return fc.predict(rows, future=future)
        return fc.predict(_take(rows, id_col, part), future=None if future is None else _take(future, id_col, part))
    good, bad = [], []
    for i in range(0, len(ids), chunk):
        g, b = isolate(ids[i:i + chunk], attempt)
        good += g
        bad += b
    return _combined(good, bad, id_col, columns)


def _take(frame: pd.DataFrame, id_col: str, ids: list[str]) -> pd.DataFrame:
    """The rows of the series ``ids``: one vectorised membership test, not a frame per series."""
    return frame[frame[id_col].isin(set(ids))]


def backtest_group(fc: Forecaster, rows: pd.DataFrame, columns: list[str], chunk: int) -> pd.DataFrame:
    """The rows of ``Forecaster.backtest`` (RUN/backtest.csv's layout) of every series in ``rows``."""
    id_col = fc.meta_.id_col
    rows = rows.assign(**{id_col: rows[id_col].astype(str)})
    ids = list(dict.fromkeys(rows[id_col].tolist()))
    model = fc.backtest_model_  # train.refit: the model that never saw the test split

    def attempt(part: list[str]) -> pd.DataFrame:
        series = load_new_series(rows if len(part) == len(ids) else _take(rows, id_col, part), fc.config_, fc.meta_)
        bt = run_backtest(model, series, fc.meta_, fc.scaler_, fc.config_)
        return bt.frame(series, fc.meta_)
    good, bad = [], []
    for i in range(0, len(ids), chunk):
        g, b = isolate(ids[i:i + chunk], attempt)
        good += g
        bad += b
    return _combined(good, bad, "series", columns)


@dataclass(frozen=True)
class Task:
    """What the closure of a Spark task carries: strings and numbers, never the model."""

    path: str  # the run folder, absolute
    digest: str  # sha256 of its manifest.json, as the driver read it
    columns: list[str]  # the output's columns
    chunk: int  # series per pandas call
    threads: int  # torch threads per task
    group_col: str  # the group key column (dropped from the input, added to the output)


def predict_rows(task: Task, key: Any, rows: pd.DataFrame) -> pd.DataFrame:
    """applyInPandas body: one group's forecasts and error rows."""
    fc = cached_run(task.path, task.digest, task.threads)
    out = predict_group(fc, rows.drop(columns=[task.group_col]), None, task.columns, task.chunk)
    return _keyed(out, task, key)


def predict_rows_future(task: Task, key: Any, rows: pd.DataFrame, future: pd.DataFrame) -> pd.DataFrame:
    """cogroup body: the group's rows and its known-future rows (either may be empty)."""
    fc = cached_run(task.path, task.digest, task.threads)
    if rows.empty:  # future rows of series with no data: nothing to forecast
        out = _combined([], [], fc.meta_.id_col, task.columns)
    else:
        fut = future.drop(columns=[task.group_col]) if not future.empty else None
        out = predict_group(fc, rows.drop(columns=[task.group_col]), fut, task.columns, task.chunk)
    return _keyed(out, task, key)


def backtest_rows(task: Task, key: Any, rows: pd.DataFrame) -> pd.DataFrame:
    fc = cached_run(task.path, task.digest, task.threads)
    return _keyed(backtest_group(fc, rows.drop(columns=[task.group_col]), task.columns, task.chunk), task, key)


def _keyed(out: pd.DataFrame, task: Task, key: Any) -> pd.DataFrame:
    out[task.group_col] = int(key[0])  # the job writes each group to its own part
    return out


def forecast_columns(fc: Forecaster) -> list[str]:
    """The columns of ``Forecaster.predict``'s frame for a long-table run, in its order."""
    meta = fc.meta_
    levels = (meta.intervals or {}).get("levels") or []
    cols = [meta.id_col, meta.time_col]
    for name in meta.targets:
        cols.append(name)
        if levels:
            cols += list(interval_columns(name, np.zeros((1, 2 * len(levels) + 1)), levels))
    return cols


BACKTEST_COLUMNS = ["series", "target", "cutoff", "origin", "step", "time", "actual", "model", "naive",
                    "seasonal_naive"]
BACKTEST_TIMES = 6  # the first six are text, text and times (cutoff, origin), the step, a time; then values


def backtest_columns(meta: RunMeta) -> list[str]:
    """RUN/backtest.csv's columns for this run (``Backtest.frame``): with model.levels each interval method's
    ``<method>_lo_<L>`` / ``<method>_hi_<L>`` after the point forecasts."""
    levels = (meta.intervals or {}).get("levels") or []
    cols = list(BACKTEST_COLUMNS)
    for name in ("model", "seasonal_naive") if levels else ():
        cols += list(interval_columns(name, np.zeros((1, 2 * len(levels) + 1)), levels))
    return cols


