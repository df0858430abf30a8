"""Many series on one machine: what each stage costs a user at 1k, 10k and 100k series x 500 points.

Generates long-format Parquet tables of synthetic daily series (a level, trend, weekly season and noise
that differ per series; 10% short ones of 120 points; 5% with 2% of their days missing, filled by
``data.missing: interpolate``), then times each stage through the public functions a user's run goes
through: read, validate, prepare, one training epoch of a fixed number of windows
(``train.windows_per_epoch``; ``Forecaster.fit`` with ``max_epochs: 1``, so the doctor's checks and the
linear skip's fit are in it), backtest, predict for every series and writing forecast.csv, and predict from the
table file as new data (``lstmcast predict RUN --data TABLE`` in its own process: read, the D13 checks and
validation of every row, the forecast and its csv). Each stage: wall time, rows/s and peak RSS (the kernel's
high-water mark, reset before each stage).

Then the target ratios:
- time per row of read+validate+prepare at the largest size vs the smallest (target <= 1.5x);
- peak RSS at the largest size vs 3 x the table's in-memory size + 500 MB (target: below);
- training samples/s on many series vs the same model on one series with the same batch (target >= 0.95);
- predict series/s vs a bare batched forward of the model on every series' last window (target >= 0.5).

Usage: python benchmarks/many_series.py [--quick] [--sizes 1000,10000,100000] [--points 500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HORIZON, WINDOW, SEASON = 14, 28, 7
BATCH, EPOCH_WINDOWS = 256, 32_768
SPEED_STEPS, SPEED_ROUNDS = 20, 7  # step_speeds: steps a round, rounds after the warm-up


class PeakRSS:
    """Peak resident memory during a block: the kernel's high-water mark (VmHWM), reset at the start by writing 5
    to /proc/self/clear_refs, so a peak inside one long C call is seen too (a sampling thread needs the GIL)."""

    def __enter__(self) -> PeakRSS:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return self

    def __exit__(self, *exc: object) -> None:
        with open("/proc/self/status") as fh:
            self.peak = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


def make_table(n_series: int, points: int, seed: int = 0):
    """A long table (id, date, y) of realistic daily series; returns the frame."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    lengths = np.where(rng.random(n_series) < 0.10, 120, points)
    gappy = rng.random(n_series) < 0.05
    t = np.arange(points)
    level = rng.lognormal(3.0, 1.0, n_series)[:, None]
    amp = level * rng.uniform(0.05, 0.4, n_series)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n_series)[:, None]
    trend = level * rng.normal(0, 0.0005, n_series)[:, None]
    y = level + trend * t + amp * np.sin(2 * np.pi * t / SEASON + phase)
    y = (y + amp * 0.3 * rng.standard_normal((n_series, points))).astype(np.float32)
    keep = t[None, :] >= points - lengths[:, None]  # short series end on the same day as the others
    drop = gappy[:, None] & (rng.random((n_series, points)) < 0.02)
    drop[:, -1] = drop[:, 0] = False  # a gap is inside a series, never at its ends
    keep &= ~drop | (t[None, :] < points - lengths[:, None])
    keep &= ~drop
    ids = np.repeat(np.array([f"s{i:06d}" for i in range(n_series)]), points).reshape(n_series, points)
    dates = pd.date_range("2020-01-01", periods=points, freq="D").values
    return pd.DataFrame({"id": ids[keep], "date": np.broadcast_to(dates, (n_series, points))[keep],
                         "y": y[keep]})


def config(path: str, **train):
    return {"data": {"path": path, "time_col": "date", "target": "y", "id_col": "id", "freq": "D",
                     "horizon": HORIZON, "window": WINDOW, "season": SEASON, "missing": "interpolate"},
            "model": {"hidden_size": 32, "num_layers": 1, "dropout": 0.0},
            "train": {"batch_size": BATCH, "max_epochs": 1, "windows_per_epoch": EPOCH_WINDOWS,
                      "min_epoch_steps": 1, "min_steps": 0, "refit": False, "precision": "fp32", "seed": 0,
                      **train},
            "eval": {"max_origins": 4}}


def stage(results: dict, name: str, rows: int, fn):
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    results[name] = {"seconds": dt, "rows_per_s": rows / dt, "peak_rss_mb": mem.peak / 2**20}
    print(f"  {name:<10} {dt:8.2f} s  {rows / dt:12,.0f} rows/s  peak RSS {mem.peak / 2**20:8.0f} MB", flush=True)
    return out


def run_size(n_series: int, points: int, folder: Path) -> dict:
    from lstmcast import Forecaster
    from lstmcast.config import validate_config
    from lstmcast.data.io import read_table, release_arrow_memory
    from lstmcast.data.prepare import prepare
    from lstmcast.data.validate import validate_frame
    from lstmcast.workflow import write_csv

    path = folder / f"series_{n_series}.parquet"
    frame = make_table(n_series, points)
    frame.to_parquet(path, index=False)
    rows, mem_table = len(frame), int(frame.memory_usage(deep=True).sum())
    del frame
    print(f"{n_series:,} series, {rows:,} rows ({mem_table / 2**20:.0f} MB in memory as pandas, "
          f"{path.stat().st_size / 2**20:.0f} MB on disk)", flush=True)
    cfg = validate_config(config(str(path)))
    res: dict = {"series": n_series, "rows": rows, "table_mb": mem_table / 2**20}
    raw = stage(res, "read", rows, lambda: read_table(str(path), None, "id"))
    series = stage(res, "validate", rows, lambda raw=raw: validate_frame(raw, cfg.data, "fp32"))
    del raw
    release_arrow_memory()  # as lstmcast's own loading does once the read table is validated (data/load.py)
    stage(res, "prepare", rows, lambda: prepare(series, cfg.data, "fp32"))
    fc = Forecaster(cfg)
    stage(res, "fit", rows, lambda: fc.fit(series))
    res["epoch_samples_per_s"] = fc.history_[0]["samples_per_s"]
    stage(res, "backtest", rows, lambda: fc.backtest())
    forecast = stage(res, "predict", rows, lambda: fc.predict())
    stage(res, "write_csv", len(forecast), lambda forecast=forecast: write_csv(forecast, folder / "forecast.csv"))
    del forecast
    # what `lstmcast predict RUN --data TABLE` pays, in its own process as a user runs it: start, load the run,
    # read, check and validate the whole table, forecast every series, write the csv
    fc.save(folder / f"run_{n_series}")
    res["predict_new"] = predict_cli(folder / f"run_{n_series}", path, folder / "forecast_new.csv", rows)
    res["predict_series_per_s"], res["bare_series_per_s"], res["model_alone_series_per_s"] = \
        predict_vs_bare(fc, n_series)
    res["local_weight"] = fc.meta_.local.weight if fc.meta_.local is not None else None  # model.local auto
    res["predict_new_series_per_s"] = n_series / res["predict_new"]["seconds"]
    many, one = step_speeds(fc.training_.trainer, one_series_trainer(folder))
    res["train_samples_per_s"], res["one_series_samples_per_s"] = many, one
    res["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  training steps {res['train_samples_per_s']:,.0f} samples/s, the epoch with its validation "
          f"{res['epoch_samples_per_s']:,.0f} (one series, same model and batch: "
          f"{res['one_series_samples_per_s']:,.0f}); predict {res['predict_series_per_s']:,.0f} series/s "
          f"(bare batched forward {res['bare_series_per_s']:,.0f}; from the table file "
          f"{res['predict_new_series_per_s']:,.0f})", flush=True)
    return res


def predict_cli(run: Path, table: Path, out: Path, rows: int) -> dict:
    """``lstmcast predict RUN --data TABLE --out OUT`` in a child process: wall time and the child's peak RSS."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lstmcast.cli", "predict", str(run), "--data", str(table),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"lstmcast predict failed: {proc.stderr.read().decode()[-2000:]}")
    peak = usage.ru_maxrss / 1024
    print(f"  {'predict_new':<10} {dt:8.2f} s  {rows / dt:12,.0f} rows/s  peak RSS {peak:8.0f} MB "
          "(lstmcast predict --data TABLE, its own process)", flush=True)
    return {"seconds": dt, "rows_per_s": rows / dt, "peak_rss_mb": peak}


def predict_vs_bare(fc, n_series: int, batch: int = 4096, rounds: int = 3) -> tuple[float, float, float | None]:
    """Series/s of ``fc.predict()`` (every series' forecast as a DataFrame) and of its floor, a bare batched
    forward of the same model on n_series random windows under inference_mode, timed in alternating rounds
    so both see the same machine load; the medians. Where ``model.local: auto`` combined the table's forecast
    with each series' Theta forecast, also the series/s of the same predict with the model alone (the work
    the bare forward does; None otherwise)."""
    import dataclasses

    import torch

    from lstmcast import Forecaster

    alone = None
    if fc.meta_.local is not None:
        alone = Forecaster(fc.config)
        alone.run_ = dataclasses.replace(fc.run_, meta=fc.meta_.model_copy(update={"local": None}))
        alone.training_ = fc.training_  # the data trained on: predict() with no argument forecasts it

    F = len(fc.prepared_.series.channel_names)
    x = torch.randn(n_series, WINDOW, F)
    model = fc.model_.eval()

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, n_series, batch):
                model(x[i:i + batch])
    ours, floor, solo = [], [], []
    bare()
    for _ in range(rounds):
        for fn, out in ((fc.predict, ours), (bare, floor), *(((alone.predict, solo),) if alone else ())):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return (n_series / float(np.median(ours)), n_series / float(np.median(floor)),
            n_series / float(np.median(solo)) if solo else None)


_ONE: list = []


def one_series_trainer(folder: Path):
    """The Trainer of the same model and batch fitted on one long series (built once, reused for every size)."""
    import pandas as pd

    from lstmcast import Forecaster

    if not _ONE:
        rng = np.random.default_rng(1)
        n = EPOCH_WINDOWS + 2000
        t = np.arange(n)
        y = 10 + 2 * np.sin(2 * np.pi * t / SEASON) + 0.5 * rng.standard_normal(n)
        path = folder / "one_series.parquet"
        pd.DataFrame({"id": "only", "date": pd.date_range("1900-01-01", periods=n, freq="D"), "y": y}).to_parquet(path)
        _ONE.append(Forecaster(config(str(path))).fit().training_.trainer)
    return _ONE[0]


def step_speeds(many, one, steps: int | None = None, rounds: int | None = None) -> tuple[float, float]:
    """Training samples/s of the two trainers' own steps (gather the batch from the series, forward, backward,
    clip, fused AdamW), on random batches of their training windows, timed in alternating rounds so both see
    the same machine load; the medians. An epoch's wall time would also hold its validation pass, which grows
    with the number of series' validation windows (bounded by train.val_windows), not with the step."""
    import torch

    steps, rounds = steps or SPEED_STEPS, rounds or SPEED_ROUNDS
    g = torch.Generator().manual_seed(0)
    many.model.train()
    one.model.train()
    times: dict[int, list[float]] = {id(many): [], id(one): []}
    for r in range(rounds + 1):
        for tr in (many, one):
            n = len(tr.data.train_idx)
            idx = [tr.data.train_idx[torch.randint(n, (BATCH,), generator=g)] for _ in range(steps)]
            t0 = time.perf_counter()
            for i in idx:
                tr.train_step(i)
            if r:  # the first round warms both up
                times[id(tr)].append(time.perf_counter() - t0)
    return tuple(steps * BATCH / float(np.median(times[id(tr)])) for tr in (many, one))  # type: ignore[return-value]


def summary(results: list[dict]) -> None:
    lo, hi = results[0], results[-1]

    def per_row(r: dict) -> float:
        return sum(r[s]["seconds"] for s in ("read", "validate", "prepare")) / r["rows"]

    print("\ntarget ratios")
    print(f"  read+validate+prepare time per row, {hi['series']:,} vs {lo['series']:,} series: "
          f"{per_row(hi) / per_row(lo):.2f}x (target <= 1.5)")
    peak, where = max((v["peak_rss_mb"], k) for k, v in hi.items() if isinstance(v, dict))
    budget = 3 * hi["table_mb"] + 500
    print(f"  peak RSS at {hi['series']:,} series: {peak:,.0f} MB (in {where}) vs 3 x table + 500 MB = "
          f"{budget:,.0f} MB (ratio {peak / budget:.2f}, target <= 1)")
    for r in results:
        train_ratio = r["train_samples_per_s"] / r["one_series_samples_per_s"]
        predict_ratio = r["predict_series_per_s"] / r["bare_series_per_s"]
        alone = r.get("model_alone_series_per_s")
        combined = "" if alone is None else (
            f"; the forecast is combined with each series' Theta forecast (model.local auto said yes), whose fits "
            f"cost that: the model alone {alone / r['bare_series_per_s']:.2f}")
        print(f"  {r['series']:,} series: training samples/s vs one series {train_ratio:.2f}"
              f" (target >= 0.95); predict series/s vs bare forward {predict_ratio:.2f}"
              f" (target >= 0.5; from the table file {r['predict_new_series_per_s'] / r['bare_series_per_s']:.2f}"
              f"{combined})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1k and 10k series only")
    ap.add_argument("--sizes", default="1000,10000,100000", help="comma-separated series counts")
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny run of every section, to check the script (CI runs every benchmark so)")
    ap.add_argument("--keep", default=None, help="write the tables and forecast here (default: a temp folder)")
    args = ap.parse_args()
    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        global EPOCH_WINDOWS, SPEED_STEPS, SPEED_ROUNDS
        sizes, args.points, EPOCH_WINDOWS, SPEED_STEPS, SPEED_ROUNDS = [50], 120, 512, 2, 1
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores visible; "
          f"batch {BATCH}, {EPOCH_WINDOWS} windows an epoch, L={WINDOW}, H={HORIZON}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results = [run_size(n, args.points, folder) for n in sizes]
    summary(results)


if __name__ == "__main__":
    sys.exit(main())
