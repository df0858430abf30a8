"""benchmarks/quality.py --levels: prediction-interval scores of lstmcast against seasonal naive.

Seasonal naive's intervals are refitted at each origin like its point forecast: the quantiles of its
in-sample h-step errors on all data up to the origin (lstmcast.model.quantiles.seasonal_naive_offsets).
lstmcast's are the calibrated intervals ``predict`` writes. Coverage is the share of actuals inside;
width and the Winkler interval score are divided by the history's seasonal-naive MAE (like MASE).
Targets: median coverage over the suite within 5 points of nominal per level, lstmcast's interval
score below seasonal naive's on at least 2/3 of the series, and on a synthetic seasonal series with
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


def summary(results: dict[str, dict], levels: list[int], synthetic: dict | None) -> dict:
    rows = {n: r["intervals"] for n, r in results.items() if "intervals" in r}
    out: dict = {"levels": levels, "series": len(rows)}
    for L in levels:
        cov = [r["lstmcast"][f"coverage_{L}"] for r in rows.values() if "lstmcast" in r]
        out[f"median_coverage_{L}"] = float(np.median(cov)) if cov else math.nan
        out[f"coverage_target_{L}"] = bool(cov) and abs(out[f"median_coverage_{L}"] - L / 100) <= 0.05
        wins = [r["lstmcast"][f"interval_score_{L}"] < r["snaive"][f"interval_score_{L}"]
                for r in rows.values() if "lstmcast" in r]
        out[f"interval_score_wins_{L}"] = f"{sum(wins)}/{len(wins)}"
        out[f"interval_score_target_{L}"] = bool(wins) and sum(wins) >= 2 * len(wins) / 3
    if synthetic is not None and "metrics" in synthetic:
        m = synthetic["metrics"]["model"]
        out["synthetic"] = {f"coverage_{L}": m[f"coverage_{L}"] for L in levels}
        out["synthetic_target"] = all(abs(m[f"coverage_{L}"] - L / 100) <= 0.03 for L in levels)
    return out


def print_table(results: dict[str, dict], s: dict, synthetic: dict | None) -> None:
    levels = s["levels"]
    print("\nprediction intervals (coverage = share inside; width, interval score scaled like MASE)")
    head = "".join(f" {'cov' + str(L):>7} {'wid' + str(L):>7} {'IS' + str(L):>7}" for L in levels)
    print(f"  {'series':<14} {'method':<9}{head} {'pinball':>8}")
    for n, r in results.items():
        for m, e in r.get("intervals", {}).items():
            cells = "".join(f" {e[f'coverage_{L}']:>7.3f} {e[f'width_{L}']:>7.3f} {e[f'interval_score_{L}']:>7.3f}"
                            for L in levels)
            print(f"  {n:<14} {m:<9}{cells} {e['pinball']:>8.4f}")
    for L in levels:
        print(f"level {L}: median lstmcast coverage {s[f'median_coverage_{L}']:.3f} (target {L / 100:.2f} +- 0.05: "
              f"{'PASS' if s[f'coverage_target_{L}'] else 'FAIL'}); interval score better than seasonal naive on "
              f"{s[f'interval_score_wins_{L}']} series (target >= 2/3: "
              f"{'PASS' if s[f'interval_score_target_{L}'] else 'FAIL'})")
    if synthetic is not None:
        if "metrics" not in synthetic:
            print(f"synthetic gauss: ERROR {synthetic.get('error')}")
        else:
            print("synthetic gauss (seasonal + N(0,1) noise, lstmcast backtest): "
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
    return {"metrics": fc.backtest(), "origins": int(len(fc.backtest_.origins))}
