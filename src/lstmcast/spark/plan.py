"""The output folder of a Spark prediction, without Spark: how many parts, which are finished, the manifest.

OUT/plan.json         written first: the run (manifest sha256), the input files, the number of parts
OUT/forecasts/part=K/ the forecasts of part K (Parquet); OUT/errors/part=K/ its bad series (id, reason)
OUT/_done/part=K.json written after part K's files are in place: rows, series, errors, sha256 of each file
OUT/manifest.json     written LAST, when every part is done: totals and the sha256 of every file

A part is the set of series whose id hashes to K (never a split series). A part without its _done record is
unfinished, whatever files it has: a rerun deletes them and computes the part again, and skips every part
whose record and files agree. So a partial output is never mistaken for a whole one (no manifest.json), and
a killed job costs only its unfinished parts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lstmcast import atomic
from lstmcast.errors import ConfigError, DataError
from lstmcast.run.manifest import file_sha256

FORMAT = 1
KINDS = ("forecasts", "errors")
# input rows per Spark job. Every job re-scans the whole input and pays its own planning, code generation and
# Python-worker set-up: 100k series in 100 parts cost 30.6-40.8 s of CPU in 7 jobs, 13.5-15.5 s in one (one
# warm local[2] session, interleaved); a stopped driver loses at most one job's parts
ROWS_PER_JOB = 50_000_000


@dataclass(frozen=True)
class Plan:
    """What a job's output is of: the same plan on a rerun, or the folder holds another job's output."""

    kind: str  # predict | backtest
    run: str  # absolute run folder
    run_sha256: str  # sha256 of RUN/manifest.json
    inputs: str  # sha256 of the input listing (input_fingerprint)
    future: str | None  # the same for the --future dataset
    rows: int
    parts: int

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}


def plan_parts(rows: int, rows_per_part: int, min_parts: int) -> int:
    """Parts for ``rows`` input rows: each at most ``rows_per_part`` rows on average (a worker holds one part
    in memory), and at least ``min_parts`` so every core gets work; never more parts than rows."""
    if rows_per_part < 1 or min_parts < 1:
        raise ConfigError(f"rows per part ({rows_per_part}) and the least number of parts ({min_parts}) must be >= 1")
    return max(1, min(max(rows, 1), max(min_parts, math.ceil(rows / rows_per_part))))


def parts_in_a_job(rows: int, parts: int, rows_per_job: int) -> int:
    """Parts per Spark job: the parts split evenly over the fewest jobs of at most ``rows_per_job`` input rows
    on average (each job re-scans the whole input, so fewer jobs cost less)."""
    if rows_per_job < 1:
        raise ConfigError(f"rows per job must be >= 1, got {rows_per_job}")
    jobs = max(1, -(-rows // rows_per_job))
    return max(1, -(-parts // jobs))


def input_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The data files of a Parquet dataset folder as Spark reads them (hidden _ and . entries skipped)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"--data {folder}: not a folder; --engine spark reads a Parquet dataset folder "
                        "(hive-partitioned col=value/ subfolders or not)")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("_", ".")))
        found += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(("_", "."))]
    if not found:
        raise DataError(f"--data {folder}: the folder holds no data files")
    return found


def input_fingerprint(folder: str | os.PathLike[str]) -> str:
    """sha256 of each data file's path (relative), size and modification time: what Spark's own file index
    compares, cheap for a dataset of any size."""
    root = Path(folder)
    digest = hashlib.sha256()
    for f in input_files(root):
        st = f.stat()
        digest.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def part_dir(out: Path, kind: str, part: int) -> Path:
    return out / kind / f"part={part}"


def _record_path(out: Path, part: int) -> Path:
    return out / "_done" / f"part={part}.json"


def part_files(out: Path, part: int) -> dict[str, str]:
    """sha256 of each data file of ``part`` (forecasts and errors), by path relative to ``out``."""
    files = {}
    for kind in KINDS:
        folder = part_dir(out, kind, part)
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.is_file() and not f.name.startswith(("_", ".")):
                    files[f.relative_to(out).as_posix()] = file_sha256(f)
    return files


def start(out: Path, plan: Plan) -> Plan:
    """Open ``out`` for ``plan``: a new folder gets plan.json; a folder of the same plan is resumed (its stored
    plan, whose part count the finished parts were cut by, wins); anything else is refused, untouched."""
    stored = out / "plan.json"
    if stored.exists():
        old = atomic.parse_json(stored.read_bytes(), str(stored), dict, hint=": delete the output folder")
        same = {k: old.get(k) for k in ("kind", "run_sha256", "inputs", "future")}
        new = {k: getattr(plan, k) for k in same}
        if same != new:
            diff = ", ".join(f"{k} {str(same[k])[:12]} -> {str(new[k])[:12]}" for k in same if same[k] != new[k])
            raise ConfigError(f"--out {out} holds the output of another job ({diff}): give a new --out folder, or "
                              "delete this one to start over")
        return Plan(**{k: old[k] for k in ("kind", "run", "run_sha256", "inputs", "future", "rows", "parts")})
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} exists and is not an lstmcast Spark output (no plan.json): give a new or "
                          "empty folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(stored, plan.as_json())
    return plan


def finished_parts(out: Path, plan: Plan) -> dict[int, dict[str, Any]]:
    """The parts whose _done record exists and whose files still have the recorded sha256; every other part's
    files are deleted (a killed job's half-written part is redone, never counted)."""
    done = {}
    for part in range(plan.parts):
        record = _read_record(out, part)
        if record is not None and part_files(out, part) == record["files"]:
            done[part] = record
            continue
        discard(out, part)
    return done


def _read_record(out: Path, part: int) -> dict[str, Any] | None:
    path = _record_path(out, part)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_bytes())
    except ValueError:
        return None  # a damaged record: the part is redone
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None


def discard(out: Path, part: int) -> None:
    """Delete whatever ``part`` has: record first (it is what marks the part done), then its files."""
    _record_path(out, part).unlink(missing_ok=True)
    for kind in KINDS:
        shutil.rmtree(part_dir(out, kind, part), ignore_errors=True)


def finish_part(out: Path, part: int, rows: int, series: int, errors: int) -> dict[str, Any]:
    """Record ``part`` as done, after its files are in place: the record's hashes are the files' now."""
    record = {"part": part, "rows": rows, "series": series, "errors": errors, "files": part_files(out, part)}
    atomic.write_json(_record_path(out, part), record)
    return record


def write_manifest(out: Path, plan: Plan, records: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """OUT/manifest.json, the last file written: only a folder with it holds a whole output."""
    missing = [p for p in range(plan.parts) if p not in records]
    if missing:
        raise DataError(f"{out}: parts {missing[:10]} are not finished; no manifest written (rerun to resume)")
    files: dict[str, str] = {}
    for p in range(plan.parts):
        files.update(records[p]["files"])
    manifest = {**plan.as_json(), "complete": True,
                "forecast_rows": sum(r["rows"] for r in records.values()),
                "series": sum(r["series"] for r in records.values()),
                "errors": sum(r["errors"] for r in records.values()), "files": files}
    atomic.write_json(out / "manifest.json", manifest)
    return manifest


def read_manifest(out: str | os.PathLike[str], verify: bool = True) -> dict[str, Any] | None:
    """The manifest of a whole output (None while there is none); with ``verify`` every file's sha256 is
    checked and a file that differs or is missing is a DataError naming it."""
    path = Path(out) / "manifest.json"
    if not path.is_file():
        return None
    manifest = atomic.parse_json(path.read_bytes(), str(path), dict, hint=": rerun the job into a new folder")
    if verify:
        for rel, want in manifest.get("files", {}).items():
            f = Path(out) / rel
            if not f.is_file() or file_sha256(f) != want:
                raise DataError(f"{f} is missing or changed since {path} was written: rerun into a new folder")
    return manifest
