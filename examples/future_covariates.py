"""Known-future covariates: hourly electricity load with a holiday flag known in advance (and the
temperature as a past covariate: only its history is known). Predict needs the flag for the next 24 hours.

    python examples/future_covariates.py
"""

from pathlib import Path

import pandas as pd

import lstmcast

DATA = Path(__file__).resolve().parent / "data"
load = pd.read_csv(DATA / "load_hourly.csv")
config = {
    "data": {"time_col": "time", "target": "load", "features": ["temp"], "future_features": ["holiday"],
             "horizon": 24},
    "train": {"max_epochs": 5},
}
fc = lstmcast.Forecaster(config).fit(load)
print(fc.backtest()["model"])  # the backtest feeds the true holiday flags of each window
future = pd.read_csv(DATA / "load_future.csv")  # time + holiday for the 24 hours after the data
print(fc.predict(future=future).head())
