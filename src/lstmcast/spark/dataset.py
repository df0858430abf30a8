"""`lstmcast predict RUN --data DIR --engine spark --out OUT`: a Parquet dataset in, partitioned Parquet out,
resumable part by part, with OUT/manifest.json written last (plan.py describes the folder).

The parts are computed in as few Spark jobs as the input allows (``rows_per_job`` input rows each: every
job re-scans the whole input and pays its own planning, code generation and Python-worker set-up); each job
writes into a staging folder, and only after the job succeeded are its parts moved into place and recorded.
Spark's commit protocol keeps exactly one attempt of every task in the staging folder, so a killed worker or
a retried task leaves no duplicate and no missing forecast; a killed driver leaves finished parts and at most
one job's staging.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lstmcast.errors import LstmcastError
from lstmcast.spark import job, plan
from lstmcast.spark.worker import ERROR_COL

STAGING = "_staging"


class SparkJobError(LstmcastError, RuntimeError):
    """A Spark job failed beyond its task retries (a worker lost too often, out of memory, a bug)."""

    exit_code = 3


@dataclass
class Outcome:
    """What a call did: the manifest (totals), and how many parts this call computed and skipped."""

    manifest: dict[str, Any]
    computed: int
    skipped: int


def read_dataset(spark: SparkSession, folder: str | os.PathLike[str]) -> DataFrame:
    """A Parquet dataset folder, hive-partitioned (col=value/ subfolders become columns) or not."""
    path = str(Path(folder).resolve())
    return spark.read.option("basePath", path).parquet(path)


def predict_dataset(run: str | os.PathLike[str], data: str | os.PathLike[str], out: str | os.PathLike[str],
                    future: str | os.PathLike[str] | None = None, *, master: str = "local[2]",
                    spark: SparkSession | None = None, rows_per_part: int = job.ROWS_PER_GROUP,
                    parts_per_job: int | None = None, rows_per_job: int = plan.ROWS_PER_JOB,
                    on_part: Callable[[int, int], None] | None = None) -> Outcome:
    """Forecast every series of the dataset ``data`` into ``out``; a rerun skips the finished parts. ``spark``:
    a session to use (default: a local one on ``master``, started only when there is work left). The parts
    are computed ``parts_per_job`` per Spark job (default: as many as ``rows_per_job`` input rows hold).

    >>> predict_dataset("runs/demo", "recent/", "forecasts/").manifest["series"]     # doctest: +SKIP
    """
    out_dir = Path(out)
    ref = job.run_ref(run)
    wanted = plan.Plan(kind="predict", run=ref.path, run_sha256=ref.digest, inputs=plan.input_fingerprint(data),
                       future=plan.input_fingerprint(future) if future is not None else None, rows=0, parts=0)
    if (out_dir / "manifest.json").exists():  # a whole output already: checked, not recomputed (no Spark)
        stored = plan.start(out_dir, wanted)  # the same job's, or a refusal naming the difference
        return Outcome(plan.read_manifest(out_dir) or {}, 0, stored.parts)
    spark = spark or job.local_session(master, max_failures=4)  # local mode: a lost worker's task is retried
    rows = read_dataset(spark, data)
    fut = read_dataset(spark, future) if future is not None else None
    if not (out_dir / "plan.json").exists():
        n = rows.count()  # Parquet footers: no scan of the data
        parts = plan.plan_parts(n, rows_per_part, 2 * spark.sparkContext.defaultParallelism)
        wanted = plan.Plan(**{**wanted.__dict__, "rows": n, "parts": parts})
    the_plan = plan.start(out_dir, wanted)
    shutil.rmtree(out_dir / STAGING, ignore_errors=True)  # a killed job's staging: never counted, redone
    records = plan.finished_parts(out_dir, the_plan)
    todo = [p for p in range(the_plan.parts) if p not in records]
    per_job = parts_per_job or plan.parts_in_a_job(the_plan.rows, the_plan.parts, rows_per_job)
    id_col = ref.fc.meta_.id_col
    for i in range(0, len(todo), per_job):
        wave = todo[i:i + per_job]
        try:
            records.update(_run_wave(ref, rows, fut, the_plan.parts, wave, out_dir, id_col))
        except PySparkException as exc:
            raise SparkJobError(f"the Spark job for parts {wave[0]}..{wave[-1]} failed after its retries "
                                f"({_cause(exc)}); the {len(records)} finished parts of {the_plan.parts} are kept: "
                                "rerun the same command to resume") from None
        if on_part is not None:
            on_part(len(records), the_plan.parts)
    manifest = plan.write_manifest(out_dir, the_plan, records)
    shutil.rmtree(out_dir / STAGING, ignore_errors=True)
    return Outcome(manifest, len(todo), the_plan.parts - len(todo))


def _run_wave(ref: job.RunRef, rows: DataFrame, fut: DataFrame | None, parts: int, wave: list[int], out: Path,
              id_col: str) -> dict[int, dict[str, Any]]:
    """Compute the parts ``wave`` in one Spark job (two writes of one persisted result), then move each part
    into place and record it."""
    mine = F.col(job.GROUP_COL).isin(wave)
    part_rows = job.with_group(rows, id_col, parts).filter(mine).drop(job.GROUP_COL)
    part_fut = job.with_group(fut, id_col, parts).filter(mine).drop(job.GROUP_COL) if fut is not None else None
    combined = job.combined_predict(ref, part_rows, part_fut, parts, keep_group=True).persist()
    stage = out / STAGING / f"job-{wave[0]}"
    try:
        ok = F.col(ERROR_COL).isNull()
        combined.filter(ok).drop(ERROR_COL).write.partitionBy(job.GROUP_COL).parquet(str(stage / "forecasts"))
        (combined.filter(~ok).select(F.col(id_col).alias("id"), F.col(ERROR_COL).alias("reason"), job.GROUP_COL)
         .write.partitionBy(job.GROUP_COL).parquet(str(stage / "errors")))
    finally:
        combined.unpersist()
    records = {}
    for part in wave:
        counts = {}
        for kind in plan.KINDS:
            src = stage / kind / f"{job.GROUP_COL}={part}"
            counts[kind] = _count(src, "id" if kind == "errors" else id_col)
            if src.is_dir():
                dst = plan.part_dir(out, kind, part)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        (fc_rows, fc_series), (err_rows, _) = counts["forecasts"], counts["errors"]
        records[part] = plan.finish_part(out, part, fc_rows, fc_series, err_rows)
    shutil.rmtree(stage, ignore_errors=True)
    return records


def _count(folder: Path, id_col: str) -> tuple[int, int]:
    """(rows, distinct series) of one part's Parquet files: the ids of one part, read on the driver."""
    if not folder.is_dir():
        return 0, 0
    files = [str(f) for f in sorted(folder.iterdir()) if f.suffix == ".parquet"]
    if not files:
        return 0, 0
    ids = pq.ParquetDataset(files).read(columns=[id_col]).column(id_col)
    return len(ids), len(ids.unique())


def _cause(exc: BaseException) -> str:
    """The first line of Spark's message, cut: its full text is a JVM stack trace."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
