"""Prediction and backtests of a Spark DataFrame: every row of a series goes to one group, one pandas call.

The group of a series is ``pmod(xxhash64(id), groups)``: a function of the id alone, so all its rows meet in
one ``applyInPandas`` call (``cogroup`` with the known-future rows), whatever the input's partitioning, and a
retried task recomputes exactly its groups. Inside a group the worker forecasts many series per call
(worker.py); the model is loaded there from the run folder's path, never shipped in the closure.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lstmcast.errors import ConfigError, DataError, did_you_mean
from lstmcast.forecaster import Forecaster, load_run
from lstmcast.spark import worker
from lstmcast.spark.plan import plan_parts
from lstmcast.spark.worker import ERROR_COL

if TYPE_CHECKING:
    from lstmcast.run.meta import RunMeta

GROUP_COL = "lstmcast_group"
ROWS_PER_GROUP = 200_000  # a group is one pandas frame in one Python worker: ~10-50 MB at this size
SERIES_PER_CALL = 20_000  # series per Forecaster.predict call inside a group


class Result(NamedTuple):
    """Forecasts (Forecaster.predict's columns) and the series that could not be forecast (id, reason)."""

    forecasts: DataFrame
    errors: DataFrame


class RunRef(NamedTuple):
    path: str  # absolute: Python workers may run in another directory
    digest: str  # sha256 of RUN/manifest.json
    fc: Forecaster  # the driver's own copy: schemas and checks; never shipped to the workers


def local_session(master: str = "local[2]", max_failures: int | None = None) -> SparkSession:
    """A local Spark session as lstmcast's CLI and tests run it: this interpreter for the Python workers,
    no UI, UTC session time, shuffles sized for a few cores. ``max_failures``: attempts per task (local mode
    fails a job on the first task failure unless given)."""
    if max_failures is not None and "[" in master and "," not in master:
        master = master.replace("]", f",{max_failures}]")  # local[N,F]: F attempts per task
    # pyspark's SparkContext picks the workers' interpreter from this variable only (default: python3 on PATH)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName("lstmcast")
               .config("spark.ui.enabled", "false")
               .config("spark.pyspark.python", sys.executable).config("spark.pyspark.driver.python", sys.executable)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", str(4 * max(1, os.cpu_count() or 1)))
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    return builder.getOrCreate()


def run_ref(run: str | os.PathLike[str]) -> RunRef:
    """The run folder loaded once on the driver (a clear error here, not in every task) and its digest."""
    path = str(Path(run).resolve())
    digest = worker.manifest_digest(path)
    fc = load_run(path)
    if worker.manifest_digest(path) != digest:
        raise ConfigError(f"{path} changed while it was being read: run the job against a finished run folder")
    if fc.meta_.layout != "long":
        raise ConfigError(f"{path} was trained on {fc.meta_.layout!r} data; the Spark engine forecasts long tables "
                          "(one row per series and time, data.id_col): use `lstmcast predict` without --engine spark")
    return RunRef(path, digest, fc)


def input_columns(meta: RunMeta) -> list[str]:
    """The columns a forecast reads, in the order the model's data has them."""
    inputs = meta.inputs
    statics = (list(inputs.static_numeric) + list(inputs.static_categorical)) if inputs else []
    cols = [meta.time_col, meta.id_col, *meta.targets, *meta.features, *(meta.future_features or []), *statics]
    return list(dict.fromkeys(cols))


def select_columns(sdf: DataFrame, cols: list[str], what: str) -> DataFrame:
    lacking = [c for c in cols if c not in sdf.columns]
    if lacking:
        shown = "; ".join(f"{c!r}{did_you_mean(c, sdf.columns)}" for c in lacking)
        raise DataError(f"{what} lacks the columns the model was trained on: {shown} (it has "
                        f"{', '.join(repr(c) for c in sdf.columns[:20])})")
    return sdf.select(*cols)


def with_group(sdf: DataFrame, id_col: str, groups: int) -> DataFrame:
    """The group column: a function of the id only, so every row of a series lands in the same group."""
    return sdf.withColumn(GROUP_COL, F.pmod(F.xxhash64(F.col(id_col).cast("string")), F.lit(groups)).cast("int"))


def _time_type(meta: RunMeta) -> T.DataType:
    if meta.integer_time:
        return T.LongType()
    return T.TimestampType() if meta.tz else T.TimestampNTZType()


def forecast_schema(meta: RunMeta, columns: list[str]) -> T.StructType:
    fields = [T.StructField(meta.id_col, T.StringType()), T.StructField(meta.time_col, _time_type(meta))]
    fields += [T.StructField(c, T.DoubleType()) for c in columns[2:]]
    return T.StructType(fields)


def backtest_schema(meta: RunMeta) -> T.StructType:
    time = _time_type(meta)
    return T.StructType([T.StructField("series", T.StringType()), T.StructField("target", T.StringType()),
                         T.StructField("cutoff", time), T.StructField("origin", time),
                         T.StructField("step", T.LongType()), T.StructField("time", time)]
                        + [T.StructField(c, T.DoubleType())
                           for c in worker.backtest_columns(meta)[worker.BACKTEST_TIMES:]])


def _combined_schema(schema: T.StructType) -> T.StructType:
    return T.StructType([*schema.fields, T.StructField(ERROR_COL, T.StringType())])


def _groups(sdf: DataFrame, groups: int | None, rows_per_group: int) -> int:
    if groups is not None:
        if groups < 1:
            raise ConfigError(f"groups must be >= 1, got {groups}")
        return groups
    parallelism = sdf.sparkSession.sparkContext.defaultParallelism
    return plan_parts(sdf.count(), rows_per_group, 2 * parallelism)


def _threads(sdf: DataFrame) -> int:
    return int(sdf.sparkSession.sparkContext.getConf().get("spark.task.cpus", "1"))


def combined_predict(ref: RunRef, sdf: DataFrame, future: DataFrame | None, groups: int,
                     keep_group: bool = False) -> DataFrame:
    """Forecast rows and error rows in one frame (``lstmcast_error`` null on forecasts), grouped by series."""
    meta = ref.fc.meta_
    rows = with_group(select_columns(sdf, input_columns(meta), "the data"), meta.id_col, groups)
    columns = worker.forecast_columns(ref.fc)
    schema = _combined_schema(forecast_schema(meta, columns))
    task = worker.Task(ref.path, ref.digest, columns, SERIES_PER_CALL, _threads(sdf), GROUP_COL)
    if future is None:
        if meta.future_features:
            raise DataError(f"this model was trained with known-future covariates {meta.future_features}: pass "
                            "future= (time, id and those columns for the horizon after each series)")
        out = _apply(rows.groupBy(GROUP_COL), functools.partial(worker.predict_rows, task), _with_group(schema))
    else:
        if not meta.future_features:
            raise DataError("future= was given but this model has no known-future covariates "
                            "(data.future_features): drop it")
        fut = with_group(select_columns(future, [meta.time_col, meta.id_col, *meta.future_features], "future"),
                         meta.id_col, groups)
        out = _apply(rows.groupBy(GROUP_COL).cogroup(fut.groupBy(GROUP_COL)),
                     functools.partial(worker.predict_rows_future, task), _with_group(schema))
    return out if keep_group else out.drop(GROUP_COL)


def _apply(grouped: Any, body: functools.partial, schema: T.StructType) -> DataFrame:
    """``applyInPandas`` of a partial: pyspark warns that it cannot read type hints off one (there are none to
    read: the body takes and returns pandas frames)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot infer the eval type", category=UserWarning)
        return grouped.applyInPandas(body, schema=schema)


def _with_group(schema: T.StructType) -> T.StructType:
    return T.StructType([*schema.fields, T.StructField(GROUP_COL, T.IntegerType())])


def split(combined: DataFrame, id_col: str) -> Result:
    ok = F.col(ERROR_COL).isNull()
    return Result(combined.filter(ok).drop(ERROR_COL),
                  combined.filter(~ok).select(F.col(id_col).alias("id"), F.col(ERROR_COL).alias("reason")))


def predict_with_errors(run: str | os.PathLike[str], sdf: DataFrame, future: DataFrame | None = None, *,
                        groups: int | None = None, rows_per_group: int = ROWS_PER_GROUP) -> Result:
    """Forecasts and the per-series errors of one computation (persisted until you ``unpersist`` it).

    >>> res = predict_with_errors("runs/demo", spark.read.parquet("recent/"))   # doctest: +SKIP
    >>> res.errors.show(); res.forecasts.write.parquet("forecasts/")             # doctest: +SKIP
    """
    ref = run_ref(run)
    combined = combined_predict(ref, sdf, future, _groups(sdf, groups, rows_per_group)).persist()
    return split(combined, ref.fc.meta_.id_col)


def predict(run: str | os.PathLike[str], sdf: DataFrame, future: DataFrame | None = None, *,
            groups: int | None = None, rows_per_group: int = ROWS_PER_GROUP) -> DataFrame:
    """``Forecaster.predict`` of every series of ``sdf``, as a Spark DataFrame with the same columns and values.

    A series is never split: its rows (and its ``future`` rows) meet in one pandas call. Series that cannot
    be forecast are left out; ``predict_with_errors`` gives them with their reasons.

    >>> from lstmcast.spark import local_session, predict
    >>> spark = local_session()                                                   # doctest: +SKIP
    >>> predict("runs/demo", spark.read.parquet("recent/")).show()                 # doctest: +SKIP
    """
    ref = run_ref(run)
    combined = combined_predict(ref, sdf, future, _groups(sdf, groups, rows_per_group))
    return split(combined, ref.fc.meta_.id_col).forecasts


def combined_backtest(ref: RunRef, sdf: DataFrame, groups: int, keep_group: bool = False) -> DataFrame:
    meta = ref.fc.meta_
    rows = with_group(select_columns(sdf, input_columns(meta), "the data"), meta.id_col, groups)
    schema = _combined_schema(backtest_schema(meta))
    task = worker.Task(ref.path, ref.digest, worker.backtest_columns(meta), SERIES_PER_CALL, _threads(sdf), GROUP_COL)
    out = _apply(rows.groupBy(GROUP_COL), functools.partial(worker.backtest_rows, task), _with_group(schema))
    return out if keep_group else out.drop(GROUP_COL)


def backtest_with_errors(run: str | os.PathLike[str], sdf: DataFrame, *, groups: int | None = None,
                         rows_per_group: int = ROWS_PER_GROUP) -> Result:
    """``backtest``'s rows and the series that could not be backtested (id, reason), persisted."""
    ref = run_ref(run)
    combined = combined_backtest(ref, sdf, _groups(sdf, groups, rows_per_group)).persist()
    return split(combined, "series")


def backtest(run: str | os.PathLike[str], sdf: DataFrame, *, groups: int | None = None,
             rows_per_group: int = ROWS_PER_GROUP) -> DataFrame:
    """The rolling-origin backtest rows of every series (RUN/backtest.csv's columns: series, target, origin,
    step, time, actual, model, naive, seasonal_naive), equal to ``Forecaster.backtest``'s ``backtest_.frame``
    on the same rows. Metrics over many series are a mean of per-series values: aggregate these rows."""
    ref = run_ref(run)
    return split(combined_backtest(ref, sdf, _groups(sdf, groups, rows_per_group)), "series").forecasts
