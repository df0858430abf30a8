"""Prediction of many series on Spark (local mode) against one process of `lstmcast predict` (issue 26).

Trains a small long-table run once, writes N synthetic daily series of mixed lengths (window .. window + 8
recent rows each) as ONE Parquet file of several row groups inside a dataset folder, then runs, each in its
own process, on the same data:
- one process: `lstmcast predict RUN --data FILE --out forecast.csv` (torch on every core, its default);
- Spark: `lstmcast predict RUN --data DIR --engine spark --master local[2] --out OUT` (2 task slots, one
  torch thread per task), partitioned Parquet + manifest.
Reports forecasts/s end to end (Spark's JVM start included), the one-process peak RSS, and the peak RSS of
every Spark Python worker (VmHWM of pyspark.daemon's children, sampled while the job runs) and of the JVM.

Targets: Spark local[2] >= 1.5x one process at 1M series; peak worker memory flat from 100k to 1M (bounded by
a part, --rows-per-part, not by the table).

Usage: python benchmarks/spark_predict.py [--smoke | --quick] [--sizes 100000,1000000] [--keep DIR]
  --smoke  2,000 series, Spark in this process, forecasts checked against Forecaster.predict (CI, < 60 s
           where the JVM starts in ~15 s)
  --quick  100k series only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WINDOW, HORIZON, SEASON = 16, 7, 7
ROOT = Path(__file__).resolve().parents[1]


def make_history(n_series: int, seed: int, first: int = 0):
    """Daily series (id, time, y) with window .. window + 8 rows, start days and levels that differ."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    lens = rng.integers(WINDOW, WINDOW + 9, n_series)
    k = np.repeat(np.arange(first, first + n_series), lens)
    t = np.concatenate([np.arange(n) for n in lens]) if n_series else np.zeros(0, dtype=np.int64)
    start = np.repeat(rng.integers(0, 60, n_series), lens)
    y = 10 + k % 13 + 3 * np.sin(2 * np.pi * (t + start) / SEASON) + 0.3 * rng.normal(size=len(t))
    ids = np.char.add("s", k.astype(str)).astype(object)
    return pd.DataFrame({"id": ids, "time": pd.Timestamp("2024-01-01") + pd.to_timedelta(t + start, unit="D"),
                         "y": y.astype(np.float64)})


def train_run(folder: Path) -> Path:
    from lstmcast import Forecaster

    run = folder / "run"
    if not (run / "manifest.json").exists():
        import pandas as pd

        rng = np.random.default_rng(2)
        frames = []
        for s in range(50):  # 120 daily points each: enough for train/val/test splits
            t = np.arange(120)
            frames.append(pd.DataFrame({"id": f"s{s}", "time": pd.date_range("2024-01-01", periods=120, freq="D"),
                                        "y": 10 + s % 13 + 3 * np.sin(2 * np.pi * t / SEASON) + 0.3 * rng.normal(size=120)}))
        cfg = {"data": {"time_col": "time", "id_col": "id", "target": "y", "horizon": HORIZON, "window": WINDOW,
                        "season": SEASON, "calendar": "none"},
               "model": {"hidden_size": 32, "num_layers": 1},
               "train": {"max_epochs": 2, "min_steps": 0, "refit": False, "seed": 0}}
        Forecaster(cfg).fit(pd.concat(frames, ignore_index=True)).save(run)
    return run


def write_dataset(folder: Path, n_series: int, chunk: int = 100_000) -> tuple[Path, int]:
    """DIR/part-0.parquet: one file (the one-process side reads a file), a row group per ``chunk`` series."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = folder / f"data-{n_series}"
    path = data / "part-0.parquet"
    rows = 0
    if not path.exists():
        data.mkdir(parents=True, exist_ok=True)
        writer = None
        for i, first in enumerate(range(0, n_series, chunk)):
            table = pa.Table.from_pandas(make_history(min(chunk, n_series - first), seed=10 + i, first=first),
                                         preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=len(table) // 4 + 1)
            rows += len(table)
        writer.close()
    return path, pq.ParquetFile(path).metadata.num_rows


def _vm(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class WorkerPeaks(threading.Thread):
    """Peak RSS (VmHWM) of each pyspark Python worker and of the JVM, sampled every 0.5 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.workers: dict[int, int] = {}
        self.jvm = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"pyspark.daemon" in cmd:
                    self.workers[int(pid)] = max(self.workers.get(int(pid), 0), _vm(int(pid), "VmHWM"))
                elif b"org.apache.spark" in cmd and b"java" in cmd:
                    self.jvm = max(self.jvm, _vm(int(pid), "VmHWM"))


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(wall s, peak RSS of the process tree's largest process, output tail) of a command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, peak, out[-600:]


def measure(folder: Path, run: Path, n_series: int) -> dict[str, float]:
    file, rows = write_dataset(folder, n_series)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    lstmcast = [sys.executable, "-m", "lstmcast"]
    # the one process at its default: torch on every core (no OMP_NUM_THREADS cap); Spark: a thread per task
    one_env = {k: v for k, v in env.items() if k != "OMP_NUM_THREADS"}
    one_wall, one_peak, _ = _timed([*lstmcast, "predict", str(run), "--data", str(file), "--out",
                                    str(folder / f"one-{n_series}.csv")], one_env)
    out = folder / f"spark-{n_series}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    peaks = WorkerPeaks()
    peaks.start()
    spark_wall, _, tail = _timed([*lstmcast, "predict", str(run), "--data", str(file.parent), "--engine", "spark",
                                  "--master", "local[2]", "--out", str(out)], env)
    peaks.stop.set()
    peaks.join()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["series"] == n_series and manifest["errors"] == 0, manifest
    forecasts = n_series * HORIZON
    worker_peak = max(peaks.workers.values()) if peaks.workers else 0
    res = {"series": n_series, "rows": rows, "parts": manifest["parts"],
           "one_process_s": one_wall, "one_process_forecasts_per_s": forecasts / one_wall,
           "one_process_peak_rss_mb": one_peak / 2**20,
           "spark_s": spark_wall, "spark_forecasts_per_s": forecasts / spark_wall,
           "speedup": one_wall / spark_wall, "spark_worker_peak_rss_mb": worker_peak / 2**20,
           "spark_workers_seen": len(peaks.workers), "spark_jvm_peak_rss_mb": peaks.jvm / 2**20}
    print(json.dumps(res), flush=True)
    return res


def smoke(folder: Path, run: Path) -> None:
    """2,000 series through predict_dataset in this process, checked against Forecaster.predict."""
    import pandas as pd

    from lstmcast import Forecaster
    from lstmcast.spark import predict_dataset

    file, _ = write_dataset(folder, 2_000)
    t0 = time.perf_counter()
    res = predict_dataset(run, file.parent, folder / "smoke-out", rows_per_part=10_000)
    wall = time.perf_counter() - t0
    want = Forecaster.load(run).predict(pd.read_parquet(file))
    got = pd.read_parquet(folder / "smoke-out" / "forecasts").drop(columns=["part"])
    got, want = (f.sort_values(["id", "time"]).reset_index(drop=True) for f in (got, want))
    assert res.manifest["forecast_rows"] == len(want) == len(got) and res.manifest["errors"] == 0
    diff = float(np.abs(got["y"].to_numpy() - want["y"].to_numpy()).max())
    assert diff <= 1e-6 * max(1.0, float(np.abs(want["y"]).max())), diff
    print(json.dumps({"smoke_series": 2_000, "parts": res.manifest["parts"], "wall_s": round(wall, 1),
                      "max_abs_diff_vs_one_process": diff}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--keep", type=Path, help="keep the data, run and outputs in this folder")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        run = train_run(folder)
        if args.smoke:
            return smoke(folder, run)
        sizes = [100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
        results = [measure(folder, run, n) for n in sizes]
        if len(results) > 1:
            a, b = results[0], results[-1]
            print(f"worker peak RSS {a['spark_worker_peak_rss_mb']:.0f} MB at {a['series']:,} series, "
                  f"{b['spark_worker_peak_rss_mb']:.0f} MB at {b['series']:,} "
                  f"(ratio {b['spark_worker_peak_rss_mb'] / max(a['spark_worker_peak_rss_mb'], 1):.2f})")
        print(f"speedup of Spark local[2] over one process at {results[-1]['series']:,} series: "
              f"{results[-1]['speedup']:.2f}x (target >= 1.5)")


if __name__ == "__main__":
    main()
