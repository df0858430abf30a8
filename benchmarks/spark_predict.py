"""Prediction of many series on Spark (local mode) against one process of `lstmcast predict` (issue 26).

Trains a small long-table run once, writes N synthetic daily series of mixed lengths (window .. window + 8
recent rows each) as ONE Parquet file of several row groups inside a dataset folder, then runs, each in its
own process, on the same data:
- one process: `lstmcast predict RUN --data FILE --out forecast.csv` (torch on every core, its default);
- Spark: `lstmcast predict RUN --data DIR --engine spark --master local[2] --out OUT` (2 task slots, one
  torch thread per task), partitioned Parquet + manifest.
Reports forecasts/s end to end (Spark's JVM start included), the one-process peak RSS, and the peak RSS of
every Spark Python worker (VmHWM of pyspark.daemon's children, sampled while the job runs) and of the JVM.
And the CPU time (user + sys) of each side, to bound what Spark can gain on this machine:
- the cores one process uses, c = CPU s / (wall s - its main thread's waits for a core), and the ceiling
  cores / c: what local[N] could reach if Spark cost nothing (the "ceiling on this machine");
- the one process again with one torch thread, and Spark's CPU by process (JVM, Python workers, driver,
  sampled from /proc): Spark's CPU spread perfectly over every core against the one-thread CPU bounds the
  speedup by a ratio of CPU times, which the other jobs on a shared machine move less than wall times.

Targets: Spark local[2] >= 1.5x one process at 1M series; peak worker memory flat from 100k to 1M (bounded by
a part, --rows-per-part, not by the table).

Usage: python benchmarks/spark_predict.py [--smoke | --quick] [--sizes 100000,1000000] [--side both|one|spark]
                                         [--keep DIR]
  --smoke  2,000 series, Spark in this process, forecasts checked against Forecaster.predict (CI, < 60 s
           where the JVM starts in ~15 s)
  --quick  100k series only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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
            y = 10 + s % 13 + 3 * np.sin(2 * np.pi * t / SEASON) + 0.3 * rng.normal(size=120)
            frames.append(pd.DataFrame({"id": f"s{s}", "time": pd.date_range("2024-01-01", periods=120, freq="D"),
                                        "y": y}))
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


TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, own user+sys CPU seconds) of a live process, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK  # ppid, utime + stime


class TreeSampler(threading.Thread):
    """Every 0.2 s, the CPU time of each process under ``root`` (the last value seen: the final < 0.2 s of a
    process are missed, so the sum is a lower bound), the peak RSS (VmHWM) of each pyspark Python worker and of
    the JVM. A Spark job's processes are not all reaped by its driver, so rusage of children would miss them."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.cpu: dict[int, float] = {}
        self.kind: dict[int, str] = {}  # driver | jvm | python workers | other
        self.root_waited = 0.0  # s the root's main thread stood runnable in the run queue, waiting for a core
        self.workers: dict[int, int] = {}
        self.jvm = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            self.sample()
            if self.stop.wait(0.2):
                return

    def sample(self) -> None:
        stats = {int(p): st for p in os.listdir("/proc") if p.isdigit() and (st := _stat(int(p))) is not None}
        tree = {self.root}
        grown = True
        while grown:  # descendants of root: add children until none is new
            new = {pid for pid, (ppid, _) in stats.items() if ppid in tree and pid not in tree}
            tree |= new
            grown = bool(new)
        try:  # schedstat: ns on a core, ns waiting for one, time slices
            self.root_waited = int(Path(f"/proc/{self.root}/schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            pass
        for pid in tree & stats.keys():
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), stats[pid][1])
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"pyspark.daemon" in cmd:
                self.workers[pid] = max(self.workers.get(pid, 0), _vm(pid, "VmHWM"))
                self.kind[pid] = "python workers"
            elif b"java" in cmd:
                self.jvm = max(self.jvm, _vm(pid, "VmHWM"))
                self.kind[pid] = "jvm"
            else:
                self.kind[pid] = "driver" if pid == self.root else "other"

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, cpu in self.cpu.items():
            kind = self.kind.get(pid, "other")
            out[kind] = round(out.get(kind, 0.0) + cpu, 1)
        return out


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _timed(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall s, CPU s (user + sys of the process and its reaped children: getrusage), the CPU s of its whole
    process tree sampled from /proc, the largest process' peak RSS, and the load average before and after."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = _load()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tree = TreeSampler(proc.pid)
    tree.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    tree.stop.set()
    tree.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "tree_cpu_s": sum(tree.cpu.values()),
            "cpu_by_process": tree.cpu_by_kind(), "waited_s": tree.root_waited, "peak_rss_mb": after.ru_maxrss / 2**10,
            "worker_peak_rss_mb": max(tree.workers.values(), default=0) / 2**20, "workers": len(tree.workers),
            "jvm_peak_rss_mb": tree.jvm / 2**20, "load": f"{load0} -> {_load()}", "tail": out[-600:]}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def one_process(folder: Path, run: Path, n_series: int) -> dict[str, Any]:
    """`lstmcast predict RUN --data FILE` at its default (torch on every core: no OMP_NUM_THREADS cap), timed,
    with the cores it used on average (CPU s / wall s less its waits for a core) and what that leaves a second
    task slot: on C cores, slots that each do the same CPU work with no overhead at all finish at best C / used
    times sooner. Then again with one torch thread: its CPU time is the work itself (no thread waits)."""
    file, rows = write_dataset(folder, n_series)
    env = {k: v for k, v in _env().items() if k != "OMP_NUM_THREADS"}
    cmd = [sys.executable, "-m", "lstmcast", "predict", str(run), "--data", str(file), "--out",
           str(folder / f"one-{n_series}.csv")]
    r = _timed(cmd, env)
    r1 = _timed(cmd, {**env, "OMP_NUM_THREADS": "1"})
    # on a shared machine the wall time holds the waits for a core; the main thread's run-queue wait taken
    # off leaves the time it would take alone (the main thread is the critical path: torch's threads join it)
    alone = max(r["wall_s"] - r["waited_s"], 1e-9)
    used = max(r["cpu_s"], r["tree_cpu_s"]) / alone
    res = {"series": n_series, "rows": rows, "one_process_s": r["wall_s"], "one_process_cpu_s": r["cpu_s"],
           "one_process_waited_s": r["waited_s"], "one_process_cores_used": used, "ceiling": _cores() / used,
           "one_process_forecasts_per_s": n_series * HORIZON / r["wall_s"],
           "one_process_peak_rss_mb": r["peak_rss_mb"], "one_process_load": r["load"],
           "one_thread_s": r1["wall_s"], "one_thread_cpu_s": r1["cpu_s"], "one_thread_load": r1["load"]}
    print(json.dumps(res), flush=True)
    return res


def spark_side(folder: Path, run: Path, n_series: int, master: str = "local[2]") -> dict[str, Any]:
    """`lstmcast predict RUN --data DIR --engine spark` timed end to end (the JVM start included)."""
    file, _ = write_dataset(folder, n_series)
    out = folder / f"spark-{n_series}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    r = _timed([sys.executable, "-m", "lstmcast", "predict", str(run), "--data", str(file.parent), "--engine",
                "spark", "--master", master, "--out", str(out)], _env())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["series"] == n_series and manifest["errors"] == 0, manifest
    res = {"series": n_series, "parts": manifest["parts"], "spark_s": r["wall_s"], "spark_cpu_s": r["tree_cpu_s"],
           "spark_cores_used": r["tree_cpu_s"] / r["wall_s"],
           "spark_cpu_by_process": r["cpu_by_process"],
           "spark_forecasts_per_s": n_series * HORIZON / r["wall_s"],
           "spark_worker_peak_rss_mb": r["worker_peak_rss_mb"], "spark_workers_seen": r["workers"],
           "spark_jvm_peak_rss_mb": r["jvm_peak_rss_mb"], "spark_load": r["load"]}
    print(json.dumps(res), flush=True)
    return res


def measure(folder: Path, run: Path, n_series: int, side: str = "both") -> dict[str, Any]:
    res: dict[str, Any] = {}
    if side in ("both", "one"):
        res.update(one_process(folder, run, n_series))
    if side in ("both", "spark"):
        res.update(spark_side(folder, run, n_series))
    if side == "both":
        res["speedup"] = res["one_process_s"] / res["spark_s"]
        # Spark's CPU spread perfectly over every core, against one process that takes no longer than its
        # one-thread CPU time: an upper bound on the speedup that the load does not move (CPU s, not wall s)
        res["cpu_bound"] = _cores() * res["one_thread_cpu_s"] / res["spark_cpu_s"]
        print(f"{n_series:,} series: Spark local[2] / one process {res['speedup']:.2f}x; ceiling on this machine "
              f"{res['ceiling']:.2f}x (one process used {res['one_process_cores_used']:.2f} of {_cores()} cores); "
              f"CPU: one process {res['one_thread_cpu_s']:.1f} s (one thread), Spark {res['spark_cpu_s']:.1f} s "
              f"{res['spark_cpu_by_process']} -> at most {res['cpu_bound']:.2f}x", flush=True)
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
    ap.add_argument("--side", choices=("both", "one", "spark"), default="both",
                    help="one: the one-process side alone (its cores used and the ceiling); spark: Spark alone")
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
        results = [measure(folder, run, n, args.side) for n in sizes]
        last = results[-1]
        if len(results) > 1 and args.side != "one":
            a, b = results[0], last
            print(f"worker peak RSS {a['spark_worker_peak_rss_mb']:.0f} MB at {a['series']:,} series, "
                  f"{b['spark_worker_peak_rss_mb']:.0f} MB at {b['series']:,} "
                  f"(ratio {b['spark_worker_peak_rss_mb'] / max(a['spark_worker_peak_rss_mb'], 1):.2f})")
        if args.side != "spark":
            print(f"ceiling on this machine at {last['series']:,} series: {last['ceiling']:.2f}x ({_cores()} cores / "
                  f"{last['one_process_cores_used']:.2f} used by one process)")
        if args.side == "both":
            print(f"speedup of Spark local[2] over one process at {last['series']:,} series: "
                  f"{last['speedup']:.2f}x (target >= 1.5; ceiling on this machine {last['ceiling']:.2f}x)")


if __name__ == "__main__":
    main()
