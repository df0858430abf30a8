"""Calendar positions and forecast stamps in numpy equal pandas' (they feed a one-series predict of ~1 ms), and
predict's numpy fast path covers daily, weekly and monthly data, accepting and refusing what the general path does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster
from lstmcast.data.calendar import CALENDAR_NAMES, _positions, future_times
from lstmcast.inference.fastpath import fast_series
from lstmcast.inference.predict import forecast_frame, load_new_series
from tests.conftest import small_config


def _pandas_positions(index: pd.DatetimeIndex, name: str) -> np.ndarray:
    """The pandas field arithmetic the numpy code replaced."""
    return {"minute_of_hour": lambda: (index.minute.to_numpy() + index.second.to_numpy() / 60) / 60,
            "hour_of_day": lambda: (index.hour.to_numpy() + index.minute.to_numpy() / 60) / 24,
            "day_of_week": lambda: index.day_of_week.to_numpy() / 7,
            "day_of_month": lambda: (index.day.to_numpy() - 1) / index.days_in_month.to_numpy(),
            "day_of_year": lambda: (index.day_of_year.to_numpy() - 1) / np.where(index.is_leap_year, 366, 365),
            "week_of_year": lambda: (index.isocalendar().week.to_numpy(dtype=np.float64) - 1) / 52,
            "month_of_year": lambda: (index.month.to_numpy() - 1) / 12,
            "quarter_of_year": lambda: (index.quarter.to_numpy() - 1) / 4}[name]()


@pytest.mark.parametrize("name", CALENDAR_NAMES)
def test_numpy_calendar_positions_equal_pandas_fields(name):
    rng = np.random.default_rng(0)
    ns = rng.integers(pd.Timestamp("1678-01-01").value, pd.Timestamp("2262-01-01").value, 20_000)
    ns[:3] = [0, -1, pd.Timestamp("2000-02-29 23:59:59").value]  # the epoch, just before it, a leap day
    np.testing.assert_array_equal(_positions(ns, name), _pandas_positions(pd.DatetimeIndex(ns.view("M8[ns]")), name))


@pytest.mark.parametrize("freq", ["D", "2D", "W-SUN", "W-WED", "MS", "ME", "2MS", "QS-JAN", "QS-FEB", "QE-DEC",
                                  "YS", "YE", "h", "B"])
def test_forecast_stamps_equal_date_range(freq):
    for last in pd.date_range("1999-11-01", periods=30, freq=freq)[::7]:
        got = future_times(np.datetime64(last.to_datetime64(), "ns"), freq, 13, integer_time=False)
        want = pd.date_range(last, periods=14, freq=freq)[1:].as_unit("ns").to_numpy()
        np.testing.assert_array_equal(got, want)


def _frame(freq: str, n: int) -> pd.DataFrame:
    t = np.arange(n)
    return pd.DataFrame({"time": pd.date_range("2000-01-02", periods=n, freq=freq), "y": 10 + np.sin(t / 2.0)})


@pytest.mark.parametrize("freq", ["D", "W-SUN", "MS", "QE-DEC"])
def test_fast_path_covers_calendar_frequencies_and_agrees_with_the_general_path(freq):
    df = _frame(freq, 120)
    cfg = small_config(data={"window": 8, "horizon": 3, "season": 4, "calendar": "auto"},
                       train={"max_epochs": 1})
    fc = Forecaster(cfg).fit(df.iloc[:100])
    recent = df.iloc[-30:].reset_index(drop=True)
    assert fast_series(recent, fc.meta_) is not None  # the fast path is taken, so the comparison means something
    general = forecast_frame(fc.model_, load_new_series(recent, fc.config_, fc.meta_), fc.meta_, fc.scaler_)
    pd.testing.assert_frame_equal(fc.predict(recent), general)
    gap = recent.drop(index=10).reset_index(drop=True)
    shifted = recent.assign(time=recent["time"] + pd.Timedelta(hours=6))  # off the training grid
    dup = pd.concat([recent.iloc[:5], recent.iloc[4:]], ignore_index=True)
    for bad in (gap, shifted, dup):
        assert fast_series(bad, fc.meta_) is None  # the general path decides, and says why
    for bad in (gap, dup):
        with pytest.raises(ValueError):
            fc.predict(bad)
