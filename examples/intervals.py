"""Prediction intervals: 80% and 95% central intervals, calibrated; their coverage on the backtest windows.

    python examples/intervals.py
"""

from pathlib import Path

import pandas as pd

import lstmcast

DATA = Path(__file__).resolve().parent / "data"
load = pd.read_csv(DATA / "load_hourly.csv")
config = {
    "data": {"time_col": "time", "target": "load", "horizon": 24},
    "model": {"levels": [80, 95]},
    "train": {"max_epochs": 5},
}
fc = lstmcast.Forecaster(config).fit(load)
windows = fc.backtest_forecasts(stride=12)  # every window's forecasts with model_lo_80, model_hi_80, ...
inside = (windows["actual"] >= windows["model_lo_80"]) & (windows["actual"] <= windows["model_hi_80"])
print(f"80% interval coverage over {windows['origin'].nunique()} windows: {inside.mean():.2f}")
print(fc.backtest_.metrics["model"])  # coverage_80, width_80, interval_score_80, ... pinball
print(fc.predict().head())  # load, load_lo_80, load_hi_80, load_lo_95, load_hi_95
