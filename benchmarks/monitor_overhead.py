"""What the training monitor (TensorBoard + hidden-state probe) costs, measured in one run (CPU).

Fits the docs/PERFORMANCE.md reference shape (half-hourly series of 4032 points, L=96, H=48, hidden 64x2, B=32)
three ways, interleaved A/B/C per round so machine load hits all of them alike:
- A: no monitor;
- B: the monitor as `lstmcast train` attaches it (TensorBoard on, probe every epoch within its 5% budget);
- C: the monitor with the budget off (a full probe, histograms included, after every epoch).
Prints the monitor's own time as a fraction of training time for B and C (the number the 5% rule is
about), the mean cost of one probe, and the wall-clock fit time of B and C against A.

Usage: python benchmarks/monitor_overhead.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def frame(n: int = 4032, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = np.sin(2 * np.pi * t / 48) + 0.5 * np.sin(2 * np.pi * t / 336) + 0.2 * rng.standard_normal(n)
    return pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="30min"), "y": y})


def config(epochs: int, threads: int) -> dict:
    return {"data": {"time_col": "time", "target": "y", "window": 96, "horizon": 48, "season": 48},
            "model": {"hidden_size": 64, "num_layers": 2, "dropout": 0.1},
            "train": {"max_epochs": epochs, "patience": 1000, "batch_size": 32, "seed": 0, "threads": threads}}


def fit_once(df, cfg: dict, mode: str, root: Path) -> tuple[float, float, float, int]:
    """Returns (fit wall seconds, trainer seconds, monitor seconds, probes) for mode 'none' | 'default' | 'every'."""
    from lstmcast import Forecaster
    from lstmcast.config import validate_config
    from lstmcast.training.monitor import Monitor

    callbacks, mon = [], None
    if mode != "none":
        run = Path(tempfile.mkdtemp(dir=root))
        mon = Monitor(run, validate_config(cfg), max_overhead=0.05 if mode == "default" else None)
        callbacks.append(mon)
    t0 = time.perf_counter()
    fc = Forecaster(cfg).fit(df, callbacks=callbacks)
    if mon is not None:
        mon.close()
    wall = time.perf_counter() - t0
    train_s = sum(r["seconds"] for r in fc.history_)
    return wall, train_s, (mon.monitor_seconds if mon else 0.0), (len(mon.probes) if mon else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 epochs instead of 3 rounds of 6")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny run of every section, to check the script (CI runs every benchmark so)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: spinning OpenMP threads on a shared machine distort timings)")
    args = ap.parse_args()
    rounds, epochs = (1, 1) if args.smoke else (2, 3) if args.quick else (3, 6)
    df, cfg = frame(600 if args.smoke else 4032), config(epochs, args.threads)
    results: dict[str, list[tuple[float, float, float, int]]] = {"none": [], "default": [], "every": []}
    with tempfile.TemporaryDirectory() as tmp:
        fit_once(df, config(1, args.threads), "every", Path(tmp))  # warm-up: imports, first allocations
        for r in range(rounds):
            for mode in results:
                results[mode].append(fit_once(df, cfg, mode, Path(tmp)))
                wall, train_s, mon_s, probes = results[mode][-1]
                print(f"round {r + 1} {mode:8s} fit {wall:6.2f}s  training {train_s:6.2f}s  monitor {mon_s:5.3f}s "
                      f"({probes} probes)", flush=True)
    base = statistics.median(w for w, *_ in results["none"])
    for mode in ("default", "every"):
        frac = sum(m for _, _, m, _ in results[mode]) / sum(t for _, t, _, _ in results[mode])
        probes = sum(p for *_, p in results[mode])
        per_probe = 1000 * sum(m for _, _, m, _ in results[mode]) / max(1, probes)
        wall = statistics.median(w for w, *_ in results[mode])
        print(f"{mode:8s}: monitor time / training time {frac:.3f} ({probes} probes in {rounds * epochs} epochs, "
              f"{per_probe:.0f} ms per epoch with a probe); fit wall time ratio to no monitor {wall / base:.3f}")
    frac = sum(m for _, _, m, _ in results["default"]) / sum(t for _, t, _, _ in results["default"])
    print(f"monitor overhead ratio {frac:.3f} (as attached by lstmcast train; threads={args.threads}, "
          f"torch {__import__('torch').__version__}, {sys.platform})")


if __name__ == "__main__":
    main()
