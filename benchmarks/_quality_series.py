"""The real public series of benchmarks/quality.py, read from data files shipped inside pip packages.

Nothing is downloaded: statsmodels.datasets and pmdarima.datasets bundle these files (pmdarima's
``load_gasoline`` downloads, so it is not used). The hourly Victoria electricity demand (vic_elec, Jan-May 2012,
from R's tsibbledata) ships with statsmodels as the data of its MSTL tests; it is the one hourly or daily series
with calendar effects (a daily and a weekly cycle) found in the installed packages (sklearn and scipy bundle no
time series; their fetch_* / scipy.datasets download). Every loader returns a DataFrame with a datetime column
``time`` on a regular pandas frequency and a float column ``y``; SUITE gives each series the window W,
horizon H and season S a user would pick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Spec:
    name: str
    source: str
    window: int
    horizon: int
    season: int
    load: Callable[[], pd.DataFrame]


def _frame(values, start: str, freq: str) -> pd.DataFrame:
    y = np.asarray(values, dtype="float64")
    return pd.DataFrame({"time": pd.date_range(start, periods=len(y), freq=freq), "y": y})


def _co2() -> pd.DataFrame:
    from statsmodels.datasets import co2

    s = co2.load_pandas().data["co2"].interpolate(method="linear")  # 59 missing weeks
    # the real Saturdays (weekly, W-SAT): pandas 'W' alone would mean Sundays
    return pd.DataFrame({"time": pd.DatetimeIndex(s.index), "y": s.to_numpy(dtype="float64")})


def _nile() -> pd.DataFrame:
    from statsmodels.datasets import nile

    d = nile.load_pandas().data
    return _frame(d["volume"], f"{int(d['year'].iloc[0])}-01-01", "YS")


def _macro(column: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from statsmodels.datasets import macrodata

        d = macrodata.load_pandas().data
        start = f"{int(d['year'].iloc[0])}Q{int(d['quarter'].iloc[0])}"
        return _frame(d[column], pd.Period(start, "Q").start_time.strftime("%Y-%m-%d"), "QS")
    return load


def _pm(loader: str, start: str, freq: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from pmdarima import datasets

        return _frame(getattr(datasets, loader)(as_series=True).to_numpy(), start, freq)
    return load


def _vic_elec(daily: bool) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from pathlib import Path

        import statsmodels.tsa.stl

        path = Path(statsmodels.tsa.stl.__file__).parent / "tests" / "results" / "mstl_elec_vic.csv"
        s = pd.read_csv(path, parse_dates=["ds"]).set_index("ds")["y"].asfreq("h")  # 3600 hours, no gaps
        if daily:  # the day's total demand: the weekly cycle (weekends ~12% lower) stays
            s = s.resample("D").sum()
        return pd.DataFrame({"time": pd.DatetimeIndex(s.index), "y": s.to_numpy(dtype="float64")})
    return load


def _msft() -> pd.DataFrame:
    from pmdarima import datasets

    d = datasets.load_msft()
    # trading days have weekend/holiday gaps that lstmcast refuses: number them as consecutive days instead
    return _frame(d["Close"], str(d["Date"].iloc[0]), "D")


SUITE: list[Spec] = [
    Spec("co2", "statsmodels co2 (weekly, NaN interpolated)", 104, 52, 52, _co2),
    Spec("nile", "statsmodels nile (annual)", 10, 5, 1, _nile),
    Spec("realgdp", "statsmodels macrodata realgdp (quarterly)", 16, 8, 4, _macro("realgdp")),
    Spec("cpi", "statsmodels macrodata cpi (quarterly)", 16, 8, 4, _macro("cpi")),
    Spec("unemp", "statsmodels macrodata unemp (quarterly)", 16, 8, 4, _macro("unemp")),
    Spec("airpassengers", "pmdarima airpassengers (monthly)", 24, 12, 12,
         _pm("load_airpassengers", "1949-01-01", "MS")),
    Spec("lynx", "pmdarima lynx (annual, ~10y cycle)", 20, 10, 10, _pm("load_lynx", "1821-01-01", "YS")),
    Spec("woolyrnq", "pmdarima woolyrnq (quarterly)", 16, 8, 4, _pm("load_woolyrnq", "1965-01-01", "QS")),
    Spec("wineind", "pmdarima wineind (monthly)", 24, 12, 12, _pm("load_wineind", "1980-01-01", "MS")),
    Spec("taylor", "pmdarima taylor (half-hourly)", 96, 48, 48, _pm("load_taylor", "2000-06-05", "30min")),
    Spec("heartrate", "pmdarima heartrate (every 2 s)", 20, 10, 1, _pm("load_heartrate", "2000-01-01", "2s")),
    Spec("vic_elec", "statsmodels MSTL test data: Victoria electricity demand (hourly)", 168, 24, 24,
         _vic_elec(daily=False)),
    Spec("vic_elec_d", "the same summed per day (daily, 150 days)", 28, 7, 7, _vic_elec(daily=True)),
    Spec("msft", "pmdarima msft Close (trading days as daily)", 20, 5, 5, _msft),
]
BY_NAME = {s.name: s for s in SUITE}


def suite_table() -> str:
    """The suite as a text table (also in quality.py's docstring)."""
    rows = [f"{'series':<14} {'W':>4} {'H':>3} {'S':>3}  source"]
    rows += [f"{s.name:<14} {s.window:>4} {s.horizon:>3} {s.season:>3}  {s.source}" for s in SUITE]
    return "\n".join(rows)
