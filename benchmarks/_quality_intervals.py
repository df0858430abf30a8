"""benchmarks/quality.py --levels: prediction-interval scores of lstmcast against seasonal naive.

Seasonal naive's intervals are refitted at each origin like its point forecast: the quantiles of its
in-sample h-step errors on all data up to the origin (lstmcast.model.quantiles.seasonal_naive_offsets).
lstmcast's are the calibrated intervals ``predict`` writes, scored for every seed. Coverage is the share of actuals
inside;
width and the Winkler interval score are divided by the history's seasonal-naive MAE (like MASE).
Targets (for every seed): median coverage over the suite within 5 points of nominal per level,
lstmcast's interval score below seasonal naive's on at least 2/3 of the series, and on a synthetic seasonal series with
N(0, 1) noise (``gauss``, lstmcast's own backtest) coverage within 3 points of nominal.
"""

from __future__ import annotations

import math

import numpy as np

from lstmcast.model.quantiles import interval_metrics, quantiles_for, seasonal_naive_offsets


def interval_frame_columns(levels: list[int]) -> list[str]:
    return [f"y_{side}_{L}" for L in levels for side in ("lo", "hi")]


def lstm_quantiles(intervals: list[dict[str, list[float]]], median: np.ndarray, levels: list[int]) -> np.ndarray:
    """(origins, H, 1, Q) ascending from the forecast frames' interval columns."""
    lo = [np.asarray([iv[f"y_lo_{L}"] for iv in intervals]) for L in sorted(levels, reverse=True)]
    hi = [np.asarray([iv[f"y_hi_{L}"] for iv in intervals]) for L in sorted(levels)]
    return np.stack([*lo, median, *hi], axis=-1)[:, :, None, :]


def snaive_quantiles(y: np.ndarray, starts: list[int], point: np.ndarray, h: int, s: int,
                     levels: list[int]) -> np.ndarray:
    qs = quantiles_for(levels)
    return np.stack([point[k][:, None, None] + seasonal_naive_offsets(y[:o, None], h, s, qs)
                     for k, o in enumerate(starts)])


def scores(actual: np.ndarray, q: np.ndarray, scale: float, levels: list[int]) -> dict[str, float]:
    return interval_metrics(actual[:, :, None], q, levels, np.full((1, 1, 1), scale))


def series_intervals(actual: np.ndarray, runs: dict[int, dict], y: np.ndarray, starts: list[int],
                     snaive_point: np.ndarray, h: int, s: int, scale: float, levels: list[int]) -> dict:
    """Seasonal naive's interval scores and each seed's lstmcast ones (with the interval method it chose)."""
    out: dict = {"snaive": scores(actual, snaive_quantiles(y, starts, snaive_point, h, s, levels), scale, levels),
                 "lstmcast": {}}
    for seed, r in runs.items():
        if r.get("intervals"):
            q = lstm_quantiles(r["intervals"], np.asarray(r["forecasts"]), levels)
            out["lstmcast"][str(seed)] = scores(actual, q, scale, levels) | {"method": r.get("interval_method")}
    return out


def summary(results: dict[str, dict], levels: list[int], synthetic: dict | None) -> dict:
    """Per level and seed: median coverage over the suite and interval-score wins against seasonal naive.
    A target passes when it holds for every seed; ``pooled`` counts wins over all (series, seed) pairs."""
    rows = {n: r["intervals"] for n, r in results.items() if "intervals" in r}
    seeds = sorted({sd for r in rows.values() for sd in r["lstmcast"]}, key=int)
    out: dict = {"levels": levels, "series": len(rows), "seeds": seeds}
    for L in levels:
        cov, wins = {}, {}
        for sd in seeds:
            per = [(r["lstmcast"][sd], r["snaive"]) for r in rows.values() if sd in r["lstmcast"]]
            cov[sd] = float(np.median([m[f"coverage_{L}"] for m, _ in per])) if per else math.nan
            wins[sd] = (sum(m[f"interval_score_{L}"] < b[f"interval_score_{L}"] for m, b in per), len(per))
        out[f"median_coverage_{L}"] = cov
        out[f"coverage_target_{L}"] = bool(seeds) and all(abs(c - L / 100) <= 0.05 for c in cov.values())
        out[f"interval_score_wins_{L}"] = {sd: f"{w}/{n}" for sd, (w, n) in wins.items()}
        won, total = sum(w for w, _ in wins.values()), sum(n for _, n in wins.values())
        out[f"interval_score_wins_pooled_{L}"] = f"{won}/{total}"
        out[f"interval_score_target_{L}"] = bool(seeds) and all(n and w >= 2 * n / 3 for w, n in wins.values())
    if synthetic is not None and "metrics" in synthetic:
        m = synthetic["metrics"]["model"]
        out["synthetic"] = {f"coverage_{L}": m[f"coverage_{L}"] for L in levels}
        out["synthetic_target"] = all(abs(m[f"coverage_{L}"] - L / 100) <= 0.03 for L in levels)
    return out


def print_table(results: dict[str, dict], s: dict, synthetic: dict | None) -> None:
    levels = s["levels"]
    print("\nprediction intervals (coverage = share inside; width, interval score scaled like MASE; "
          "lstmcast per seed, its interval method in brackets; * = interval score below seasonal naive's)")
    head = "".join(f" {'cov' + str(L):>7} {'wid' + str(L):>7} {'IS' + str(L):>8}" for L in levels)
    print(f"  {'series':<14} {'method':<18}{head} {'pinball':>8}")
    for n, r in results.items():
        iv = r.get("intervals")
        if not iv:
            continue
        rows = [("snaive", iv["snaive"])] + [(f"lstmcast s{sd} ({str(e['method'])[:3]})", e)
                                             for sd, e in iv["lstmcast"].items()]
        for label, e in rows:
            win = {L: "*" if label != "snaive" and e[f"interval_score_{L}"] < iv["snaive"][f"interval_score_{L}"]
                   else " " for L in levels}
            cells = "".join(f" {e[f'coverage_{L}']:>7.3f} {e[f'width_{L}']:>7.3f} {e[f'interval_score_{L}']:>7.3f}"
                            f"{win[L]}" for L in levels)
            print(f"  {n:<14} {label:<18}{cells} {e['pinball']:>8.4f}")
    for L in levels:
        cov = ", ".join(f"s{sd} {c:.3f}" for sd, c in s[f"median_coverage_{L}"].items())
        wins = ", ".join(f"s{sd} {w}" for sd, w in s[f"interval_score_wins_{L}"].items())
        print(f"level {L}: median lstmcast coverage {cov} (target {L / 100:.2f} +- 0.05: "
              f"{'PASS' if s[f'coverage_target_{L}'] else 'FAIL'}); interval score better than seasonal naive on "
              f"{wins} series, {s[f'interval_score_wins_pooled_{L}']} over all seeds (target >= 2/3 for each "
              f"seed: {'PASS' if s[f'interval_score_target_{L}'] else 'FAIL'})")
    if synthetic is not None:
        if "metrics" not in synthetic:
            print(f"synthetic gauss: ERROR {synthetic.get('error')}")
        else:
            print(f"synthetic gauss (seasonal + N(0,1) noise, lstmcast backtest, seed 0, "
                  f"{synthetic.get('interval_method')} intervals): "
                  + ", ".join(f"coverage_{L} {v:.3f}" for L, v in zip(levels, s["synthetic"].values()))
                  + f" (target +- 0.03: {'PASS' if s['synthetic_target'] else 'FAIL'})")


def synthetic_task(sets: list[str], threads: bool) -> dict:
    """lstmcast's own backtest on 3000 hourly points of a daily sine plus N(0, 1) noise."""
    import pandas as pd

    import lstmcast
    from lstmcast.config import apply_overrides

    rng = np.random.default_rng(0)
    t = np.arange(3000)
    y = 10 + 3 * np.sin(2 * np.pi * t / 24) + rng.standard_normal(len(t))
    df = pd.DataFrame({"time": pd.date_range("2020-01-01", periods=len(t), freq="h"), "y": y})
    raw = {"data": {"time_col": "time", "target": "y", "window": 48, "horizon": 12, "season": 24},
           "monitor": {"tensorboard": False},
           "eval": {"stride": 1, "max_origins": 1000}, "train": {"threads": 1} if threads else {}}
    fc = lstmcast.Forecaster(apply_overrides(raw, sets)).fit(df)
    return {"metrics": fc.backtest(), "origins": int(len(fc.backtest_.origins)),
            "interval_method": fc.meta_.intervals["method"], "method_scores": fc.meta_.intervals["method_scores"]}
