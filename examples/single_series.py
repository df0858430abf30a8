"""One series: the bundled weekly Mauna Loa CO2 record. Fit, backtest, steer the backtest, forecast, save.

    python examples/single_series.py          # writes runs/example-co2
"""

import lstmcast
from lstmcast.data.io import bundled_path

config = {
    "data": {"path": str(bundled_path("co2_weekly.csv")), "time_col": "date", "target": "co2",
             "horizon": 52, "season": 52, "missing": "interpolate"},  # 59 missing weeks: interpolated
    "train": {"max_epochs": 5},  # a short run for the example; leave it out for the real thing
}
fc = lstmcast.Forecaster(config).fit()  # data.path is read; fit(df) takes a DataFrame too

print(fc.backtest()["model"])  # MAE, RMSE, sMAPE (%), MASE on the test split
windows = fc.backtest_forecasts(start=0.8, stride=26, n_windows=4)  # 4 windows from 80% of the series on
print(windows[["cutoff", "origin", "step", "time", "actual", "model", "seasonal_naive"]].head())
print(fc.predict().head())  # the next 52 weeks after the data, original units
print("run folder:", fc.save("runs/example-co2"))  # report.html, plots, metrics: `lstmcast report runs/example-co2`
