"""Forecast quality of lstmcast's DEFAULTS against classical baselines on real public series.

The series ship inside pip packages (statsmodels, pmdarima; vic_elec is statsmodels' MSTL test data): nothing is
downloaded at run time.

series            W   H   S  source
co2             104  52  52  statsmodels co2 (weekly, NaN interpolated)
nile             10   5   1  statsmodels nile (annual)
realgdp          16   8   4  statsmodels macrodata realgdp (quarterly)
cpi              16   8   4  statsmodels macrodata cpi (quarterly)
unemp            16   8   4  statsmodels macrodata unemp (quarterly)
airpassengers    24  12  12  pmdarima airpassengers (monthly)
lynx             20  10  10  pmdarima lynx (annual, ~10y cycle)
woolyrnq         16   8   4  pmdarima woolyrnq (quarterly)
wineind          24  12  12  pmdarima wineind (monthly)
taylor           96  48  48  pmdarima taylor (half-hourly)
heartrate        20  10   1  pmdarima heartrate (every 2 s)
vic_elec        168  24  24  statsmodels MSTL test data: Victoria electricity demand (hourly)
vic_elec_d       28   7   7  the same summed per day (daily, 150 days)
msft             20   5   5  pmdarima msft Close (trading days as daily)

Protocol, the same for every method: the history is the first floor(0.8 n) points; forecast origins are
n_hist, n_hist + H, ... while origin + H <= n. lstmcast is fitted ONCE on the history through the public
API (``Forecaster(config).fit(history)``, defaults plus window/horizon/season) and forecasts each origin with
``predict(df.iloc[:origin])``. The classical baselines (naive, seasonal naive, ETS, Theta) are REFITTED at
each origin on all data up to it: they see more information than lstmcast. MASE = mean |error| over all
origins and steps / in-sample seasonal-naive MAE of the history (lag S, lag 1 when S=1); ratio = MASE /
seasonal-naive MASE; sMAPE in %. The gate counts series where lstmcast's median-seed MASE <= 1.05 x
min(naive, seasonal naive MASE).

Each worker runs with one torch thread; the harness also sets ``train.threads=1`` (lstmcast would otherwise
spread itself over all cores) unless ``--set train.threads=...`` is given, and ``LSTMCAST_CACHE_DIR=off``
so precision verdicts are not cached between runs. lstmcast's log records of level WARNING and above
(e.g. the doctor's advice) and Python warnings are collected into the JSON, not printed.

Usage: python benchmarks/quality.py [--quick] [--series a,b] [--seeds 0,1,2] [--set KEY=VALUE ...]
                                    [--jobs N] [--demo] [--levels 80,95] [--json PATH]
--levels: interval mode (benchmarks/_quality_intervals.py): every fit with model.levels, coverage, width and
interval score of each seed's lstmcast against seasonal naive's residual-quantile intervals, plus a synthetic
Gaussian series.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper module next to this file (and in spawned workers)
from _quality_series import BY_NAME, SUITE, suite_table

METHODS = ["naive", "snaive", "ets", "theta"]
GATE = 1.05


# -- the protocol ---------------------------------------------------------------------------------
def origins(n: int, horizon: int) -> tuple[int, list[int]]:
    n_hist = int(0.8 * n)
    return n_hist, list(range(n_hist, n - horizon + 1, horizon))


def naive(y: np.ndarray, h: int) -> np.ndarray:
    return np.repeat(y[-1], h)


def snaive(y: np.ndarray, h: int, s: int) -> np.ndarray:
    return np.resize(y[-s:], h) if s > 1 else naive(y, h)  # the last season repeated


def ets(y: np.ndarray, h: int, s: int) -> tuple[np.ndarray, str]:
    """Additive trend + additive season where possible; falls back to trend-only, then simple smoothing."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    kinds = [("add", None), (None, None)]
    if s > 1 and len(y) >= 2 * s:  # a seasonal fit needs two full seasons to start from
        kinds.insert(0, ("add", "add"))
    for trend, season in kinds:
        try:
            model = ExponentialSmoothing(y, trend=trend, seasonal=season, seasonal_periods=s if season else None)
            fit = model.fit(use_brute=False)  # the grid search of start values: 5x slower, same forecasts here
            f = np.asarray(fit.forecast(h), dtype="float64")
        except Exception:  # noqa: BLE001 - any failed fit means: try the next, simpler form
            continue
        if np.all(np.isfinite(f)):
            return f, f"trend={trend},season={season}"
    return naive(y, h), "naive (every ETS fit failed)"


def theta(y: np.ndarray, h: int, s: int) -> np.ndarray:
    from statsmodels.tsa.forecasting.theta import ThetaModel

    return np.asarray(ThetaModel(y, period=s, deseasonalize=s > 1).fit().forecast(h), dtype="float64")


def mase_scale(hist: np.ndarray, s: int) -> float:
    return float(np.mean(np.abs(hist[s:] - hist[:-s])))


def scores(actual: np.ndarray, forecast: np.ndarray, scale: float) -> dict[str, float]:
    err = np.abs(actual - forecast)
    denom = np.abs(actual) + np.abs(forecast)
    smape = np.where(denom > 0, 200.0 * err / np.where(denom > 0, denom, 1.0), 0.0)
    return {"MASE": float(err.mean() / scale), "sMAPE": float(smape.mean())}


# -- worker tasks (run in a spawned pool) ---------------------------------------------------------
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    logging.getLogger("lstmcast").setLevel(logging.WARNING)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def _baseline_task(name: str, method: str) -> dict:
    spec = BY_NAME[name]
    y = spec.load()["y"].to_numpy()
    _, starts = origins(len(y), spec.horizon)
    h, s = spec.horizon, spec.season
    out, notes = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for o in starts:
            if method == "ets":
                f, note = ets(y[:o], h, s)
                notes.append(note)
            elif method == "theta":
                f = theta(y[:o], h, s)
            out.append(f.tolist())
    fits = {note: notes.count(note) for note in sorted(set(notes))}  # which ETS form, at how many origins
    return {"forecasts": out, "fits": fits, "warnings": len(caught)}


def _lstm_config(spec, seed: int, sets: list[str]) -> dict:
    from lstmcast.config import apply_overrides

    raw = {"data": {"time_col": "time", "target": "y", "window": spec.window, "horizon": spec.horizon,
                    "season": spec.season}, "train": {"seed": seed}, "monitor": {"tensorboard": False}}
    if not any(item.startswith("train.threads=") for item in sets):
        raw["train"]["threads"] = 1  # one thread per worker; lstmcast would take every core otherwise
    return apply_overrides(raw, sets)


def _forecast_at(fc, df, o: int, h: int, intervals: list | None = None) -> list[float]:
    p = fc.predict(df.iloc[:o])
    if "y" not in p.columns or len(p) != h or p["time"].iloc[0] != df["time"].iloc[o]:
        raise RuntimeError(f"unexpected predict() frame at origin {o}: columns {list(p.columns)}, "
                           f"{len(p)} rows from {p['time'].iloc[0] if len(p) else None}")
    if intervals is not None:  # --levels: the interval columns too
        intervals.append({c: p[c].astype("float64").tolist() for c in p.columns if c.startswith("y_")})
    return p["y"].astype("float64").tolist()


def _lstm_task(name: str, seed: int, sets: list[str]) -> dict:
    import lstmcast

    spec = BY_NAME[name]
    df = spec.load()
    n_hist, starts = origins(len(df), spec.horizon)
    with _log_and_warnings() as (logs, caught):
        t0 = time.perf_counter()
        fc = lstmcast.Forecaster(_lstm_config(spec, seed, sets)).fit(df.iloc[:n_hist])
        fit_s = time.perf_counter() - t0
        intervals: list = []
        out = [_forecast_at(fc, df, o, spec.horizon, intervals) for o in starts]
    return {"forecasts": out, "intervals": intervals, "fit_s": fit_s, "epochs": len(fc.history_),
            "precision": fc.training_.accel.precision,
            "log": sorted(set(logs.messages)), "warnings": len(caught),
            "interval_method": (fc.meta_.intervals or {}).get("method")}


def _gauss_task(sets: list[str]) -> dict:
    import _quality_intervals as qi

    with _log_and_warnings():
        return qi.synthetic_task(list(sets), not any(item.startswith("train.threads=") for item in sets))


def _demo_task(sets: list[str]) -> dict:
    import lstmcast
    from lstmcast.config import apply_overrides, read_yaml_mapping
    from lstmcast.data.io import bundled_path

    raw = read_yaml_mapping(bundled_path("demo.yaml"))
    raw.setdefault("train", {})["seed"] = 0
    raw.setdefault("monitor", {})["tensorboard"] = False
    if not any(item.startswith("train.threads=") for item in sets):
        raw["train"]["threads"] = 1
    with _log_and_warnings() as (logs, caught):
        t0 = time.perf_counter()
        fc = lstmcast.Forecaster(apply_overrides(raw, sets)).fit(str(bundled_path()))
        fit_s = time.perf_counter() - t0
        metrics = fc.backtest()
    return {"metrics": metrics, "fit_s": fit_s, "epochs": len(fc.history_), "log": sorted(set(logs.messages)),
            "warnings": len(caught)}


class _log_and_warnings:
    """Collect lstmcast's WARNING+ records and Python warnings instead of printing them."""

    def __enter__(self):
        self.handler, self.logger = _Collect(), logging.getLogger("lstmcast")
        self.logger.addHandler(self.handler)
        self.propagate, self.logger.propagate = self.logger.propagate, False
        self.ctx = warnings.catch_warnings(record=True)
        caught = self.ctx.__enter__()
        warnings.simplefilter("always")
        return self.handler, caught

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate
        return False


def _run(task: tuple) -> tuple[tuple, dict]:
    kind, *args = task
    t0 = time.perf_counter()
    try:
        res = {"lstm": _lstm_task, "base": _baseline_task, "demo": _demo_task, "gauss": _gauss_task}[kind](*args)
    except Exception as exc:  # noqa: BLE001 - one failed fit is a result to report, not a reason to stop the suite
        res = {"error": f"{type(exc).__name__}: {exc}"}
    res["task_s"] = time.perf_counter() - t0
    return task, res


# -- orchestration --------------------------------------------------------------------------------
def run_tasks(tasks: list[tuple], jobs: int) -> dict[tuple, dict]:
    import multiprocessing as mp

    done: dict[tuple, dict] = {}
    with mp.get_context("spawn").Pool(jobs, initializer=_init_worker, maxtasksperchild=4) as pool:
        for task, res in pool.imap_unordered(_run, tasks):
            done[task] = res
            label = task[0] if task[0] in ("demo", "gauss") else f"{task[0]} {task[1]} {task[2]}"
            status = res["error"] if "error" in res else f"{res['task_s']:.1f}s"
            print(f"  done {label:<26} {status}", flush=True)
    return done


def plan(names: list[str], seeds: list[int], sets: list[str], demo: bool) -> list[tuple]:
    """Every (series, seed) lstmcast fit and (series, method) baseline run; the slow ones first."""
    cost = {n: len(BY_NAME[n].load()) for n in names}
    tasks = [("lstm", n, s, tuple(sets)) for n in names for s in seeds]
    tasks += [("base", n, m) for n in names for m in ("ets", "theta")]
    tasks.sort(key=lambda t: -cost[t[1]] * (3 if t[0] == "base" and t[2] == "ets" else 1))
    levels = [s for s in sets if s.startswith("model.levels=")]
    return ([("demo", tuple(sets))] if demo else []) + ([("gauss", tuple(sets))] if levels else []) + tasks


def series_result(name: str, seeds: list[int], done: dict[tuple, dict], sets: list[str],
                  levels: list[int] | None = None) -> dict:
    spec = BY_NAME[name]
    y = spec.load()["y"].to_numpy()
    n_hist, starts = origins(len(y), spec.horizon)
    h, s = spec.horizon, spec.season
    actual = np.stack([y[o:o + h] for o in starts])
    scale = mase_scale(y[:n_hist], s)
    fc = {"naive": np.stack([naive(y[:o], h) for o in starts]),
          "snaive": np.stack([snaive(y[:o], h, s) for o in starts])}
    res: dict = {"n": len(y), "n_hist": n_hist, "origins": len(starts), "window": spec.window, "horizon": h,
                 "season": s, "source": spec.source, "scale": scale, "methods": {m: {} for m in METHODS},
                 "lstmcast": {"seeds": {}}}
    for m in ("ets", "theta"):
        r = done[("base", name, m)]
        if "error" not in r:
            fc[m] = np.asarray(r["forecasts"])
        res["methods"][m] = {k: v for k, v in r.items() if k != "forecasts"}
    for m, f in fc.items():
        res["methods"][m].update(scores(actual, f, scale))
    for seed in seeds:
        r = done[("lstm", name, seed, tuple(sets))]
        entry = {k: v for k, v in r.items() if k not in ("forecasts", "intervals")}
        if "error" not in r:
            entry.update(scores(actual, np.asarray(r["forecasts"]), scale))
        res["lstmcast"]["seeds"][str(seed)] = entry
    ok = [v["MASE"] for v in res["lstmcast"]["seeds"].values() if "MASE" in v]
    res["lstmcast"]["MASE"] = float(np.median(ok)) if ok else math.nan
    members = [np.asarray(done[("lstm", name, sd, tuple(sets))]["forecasts"]) for sd in seeds
               if "error" not in done[("lstm", name, sd, tuple(sets))]]
    if len(members) > 1:  # what a seed ensemble (median of the members' forecasts) would score, at K x the cost
        res["lstmcast"]["ensemble"] = scores(actual, np.median(np.stack(members), axis=0), scale)
    sn = res["methods"]["snaive"]["MASE"]
    for entry in [*res["methods"].values(), res["lstmcast"], res["lstmcast"].get("ensemble", {})]:
        if "MASE" in entry:
            entry["ratio"] = entry["MASE"] / sn
    res["gate_pass"] = res["lstmcast"]["MASE"] <= GATE * min(res["methods"]["naive"]["MASE"], sn)
    if levels:  # each seed's intervals against seasonal naive's residual-quantile intervals
        import _quality_intervals as qi

        runs = {sd: done[("lstm", name, sd, tuple(sets))] for sd in seeds}
        res["intervals"] = qi.series_intervals(actual, runs, y, starts, fc["snaive"], h, s, scale, levels)
    return res


def print_series(name: str, r: dict) -> None:
    print(f"\n{name}: n={r['n']} history={r['n_hist']} origins={r['origins']} "
          f"W={r['window']} H={r['horizon']} S={r['season']}  ({r['source']})")
    print(f"  {'method':<18} {'MASE':>8} {'ratio':>7} {'sMAPE%':>8}  note")
    for m, e in r["methods"].items():
        note = e.get("error") or "; ".join(f"{k} x{v}" for k, v in e.get("fits", {}).items())
        print(f"  {m:<18} {e.get('MASE', math.nan):>8.3f} {e.get('ratio', math.nan):>7.3f} "
              f"{e.get('sMAPE', math.nan):>8.2f}  {note}")
    lc = r["lstmcast"]
    print(f"  {'lstmcast (median)':<18} {lc['MASE']:>8.3f} {lc.get('ratio', math.nan):>7.3f} {'':>8}  "
          f"gate {'PASS' if r['gate_pass'] else 'FAIL'}")
    if "ensemble" in lc:
        print(f"  {'seed ensemble':<18} {lc['ensemble']['MASE']:>8.3f} {lc['ensemble']['ratio']:>7.3f} "
              f"{lc['ensemble']['sMAPE']:>8.2f}  median of the {len(lc['seeds'])} seeds' forecasts")
    for seed, e in lc["seeds"].items():
        if "error" in e:
            print(f"    seed {seed}: ERROR {e['error']}")
        else:
            print(f"    seed {seed:<11} {e['MASE']:>8.3f} {e['MASE'] / r['methods']['snaive']['MASE']:>7.3f} "
                  f"{e['sMAPE']:>8.2f}  fit {e['fit_s']:.1f}s, {e['epochs']} epochs, {e['precision']}")


def summary(results: dict[str, dict]) -> dict:
    gm = {}
    for m in [*METHODS, "lstmcast", "ensemble"]:
        ratios = [(r["lstmcast"] if m == "lstmcast" else r["lstmcast"].get("ensemble", {}) if m == "ensemble"
                   else r["methods"][m]).get("ratio", math.nan) for r in results.values()]
        ratios = [x for x in ratios if math.isfinite(x) and x > 0]
        gm[m] = float(np.exp(np.mean(np.log(ratios)))) if ratios else math.nan
    failing = [n for n, r in results.items() if not r["gate_pass"]]
    return {"geomean_ratio_to_snaive": gm, "gate": f"lstmcast MASE <= {GATE} x min(naive, snaive)",
            "gate_pass": len(results) - len(failing), "gate_total": len(results), "gate_failing": failing}


def versions() -> dict:
    from importlib.metadata import version

    out = {p: version(p) for p in ("lstmcast", "torch", "numpy", "pandas", "statsmodels", "pmdarima")}
    return out | {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="seed 0 only")
    ap.add_argument("--series", help="comma-separated subset, e.g. nile,lynx")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted lstmcast config override for every fit (YAML scalar), repeatable")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--demo", action="store_true", help="also fit + backtest the bundled CO2 demo (seed 0)")
    ap.add_argument("--levels", help="interval mode: e.g. 80,95 (model.levels for every fit, interval scores)")
    ap.add_argument("--smoke", action="store_true", help="one short series, one seed, one short fit, JSON to a "
                    "temporary file: checks the script (CI runs every benchmark so)")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "quality.json"))
    args = ap.parse_args(argv)
    if args.smoke:
        import tempfile

        args.series, args.seeds, args.jobs = args.series or "nile", "0", 1
        args.sets = [*args.sets, "train.max_epochs=1", "train.min_steps=0", "train.refit=false"]
        args.json = str(Path(tempfile.mkdtemp(prefix="lstmcast-quality-smoke-")) / "quality.json")
    names = args.series.split(",") if args.series else [s.name for s in SUITE]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown series {unknown}; choose from {', '.join(BY_NAME)}")
    args.names = names
    args.seed_list = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    args.levels = sorted(int(v) for v in args.levels.split(",")) if args.levels else []
    if args.levels:
        args.sets = [*args.sets, f"model.levels=[{','.join(map(str, args.levels))}]"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["LSTMCAST_CACHE_DIR"] = "off"  # inherited by the spawned workers
    from lstmcast.config import apply_overrides

    apply_overrides({}, args.sets)  # a bad --set fails here, before any worker starts
    t0 = time.perf_counter()
    print(suite_table())
    print(f"\nseeds {args.seed_list}, jobs {args.jobs}, overrides {args.sets or 'none'}")
    done = run_tasks(plan(args.names, args.seed_list, args.sets, args.demo), args.jobs)
    results = {n: series_result(n, args.seed_list, done, args.sets, args.levels) for n in args.names}
    for n, r in results.items():
        print_series(n, r)
    out = {"summary": summary(results), "series": results, "overrides": args.sets, "seeds": args.seed_list,
           "jobs": args.jobs, "versions": versions()}
    if args.demo:
        out["demo"] = print_demo(done[("demo", tuple(args.sets))])
    print_summary(out["summary"], results)
    if args.levels:
        import _quality_intervals as qi

        synthetic = done.get(("gauss", tuple(args.sets)))
        out["intervals"] = qi.summary(results, args.levels, synthetic)
        out["synthetic"] = synthetic
        qi.print_table(results, out["intervals"], synthetic)
    out["wall_s"] = time.perf_counter() - t0
    print(f"\ntotal wall time {out['wall_s']:.1f}s")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=1, default=str))
    os.replace(tmp, path)
    print(f"wrote {path}")
    return 0


def print_demo(r: dict) -> dict:
    if "error" in r:
        print(f"\ndemo: ERROR {r['error']}")
        return r
    mase = r["metrics"]["model"]["MASE"]
    r["pass"] = mase <= 0.46
    print(f"\ndemo (demo.yaml on co2_weekly.csv, seed 0): backtest model MASE {mase:.3f} "
          f"(target <= 0.46: {'PASS' if r['pass'] else 'FAIL'}), fit {r['fit_s']:.1f}s, {r['epochs']} epochs; "
          + ", ".join(f"{k} {v['MASE']:.3f}" for k, v in r["metrics"].items() if k != "model"))
    return r


def print_summary(s: dict, results: dict[str, dict]) -> None:
    print("\nsummary: geometric mean over the suite of MASE / seasonal-naive MASE")
    for m, v in s["geomean_ratio_to_snaive"].items():
        print(f"  {m:<10} {v:.3f}")
    print(f"gate ({s['gate']}): {s['gate_pass']}/{s['gate_total']} series pass"
          + (f"; failing: {', '.join(s['gate_failing'])}" if s["gate_failing"] else ""))
    warn = sum(e.get("warnings", 0) for r in results.values() for e in r["methods"].values())
    logs = sum(len(e.get("log", [])) for r in results.values() for e in r["lstmcast"]["seeds"].values())
    print(f"statsmodels warnings suppressed: {warn}; distinct lstmcast log warnings collected: {logs} (see JSON)")


if __name__ == "__main__":
    sys.exit(main())
