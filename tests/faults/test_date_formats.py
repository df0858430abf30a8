"""D7: dates written day-first or month-first (European dd-mm-yyyy, US mm/dd/yyyy, ``Jan-1-1995``) are read
as the values say, never as time-zone offsets; data.time_format is applied before any zone check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstmcast.config import validate_config
from lstmcast.data.io import read_table
from lstmcast.data.validate import validate_frame
from lstmcast.errors import DataError
from tests.conftest import small_config


def load(path: Path, **data):
    cfg = validate_config(small_config(data={"time_col": "date", **data}))
    return validate_frame(read_table(path, cfg.data.delimiter), cfg.data)


def write(tmp_path: Path, stamps: list[str], name: str = "d.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame({"date": stamps, "y": np.sin(np.arange(len(stamps)) / 3.0)}).to_csv(path, index=False)
    return path


MONTHS = pd.date_range("2000-01-01", periods=60, freq="MS")


@pytest.mark.parametrize("fmt", ["%d-%m-%Y", "%d/%m/%Y", "%d.%m.%Y"])
def test_day_first_monthly_dates_read_day_first(tmp_path, fmt):
    # every day is 01, so both readings are dates: only day-first is a regular grid
    series = load(write(tmp_path, list(MONTHS.strftime(fmt))))
    assert series.freq == "MS"
    assert series.tz is None
    np.testing.assert_array_equal(series.times[0], MONTHS.to_numpy(dtype="datetime64[ns]"))


def test_day_first_daily_dates_with_a_day_above_12(tmp_path):
    days = pd.date_range("2021-03-01", periods=90, freq="D")
    series = load(write(tmp_path, list(days.strftime("%d/%m/%Y"))))
    assert series.freq == "D"
    np.testing.assert_array_equal(series.times[0], days.to_numpy(dtype="datetime64[ns]"))


def test_day_first_hourly_dates_with_a_time_of_day(tmp_path):
    hours = pd.date_range("2021-03-10", periods=200, freq="h")
    series = load(write(tmp_path, list(hours.strftime("%d-%m-%Y %H:%M"))))
    assert series.freq == "h"
    np.testing.assert_array_equal(series.times[0], hours.to_numpy(dtype="datetime64[ns]"))


def test_month_first_dates_stay_month_first(tmp_path):
    days = pd.date_range("2021-03-01", periods=90, freq="D")
    series = load(write(tmp_path, list(days.strftime("%m/%d/%Y"))))
    np.testing.assert_array_equal(series.times[0], days.to_numpy(dtype="datetime64[ns]"))


def test_month_name_dates_as_statsmodels_elec_equip(tmp_path):
    # statsmodels' elec_equip.csv writes its monthly dates 'Jan-1-1995': the year is no zone offset
    series = load(write(tmp_path, [f"{d:%b}-{d.day}-{d.year}" for d in MONTHS]))
    assert series.freq == "MS"
    assert series.tz is None
    assert series.times[0][0] == np.datetime64("2000-01-01")


def test_statsmodels_elec_equip_file_trains_its_grid():
    sm = pytest.importorskip("statsmodels.datasets.elec_equip")
    path = Path(sm.__file__).parent / "elec_equip.csv"
    cfg = validate_config(small_config(data={"time_col": "DATE", "target": "STS.M.I7.W.TOVT.NS0016.4.000"}))
    series = validate_frame(read_table(path, cfg.data.delimiter), cfg.data)
    assert series.freq == "MS"
    assert series.times[0][0] == np.datetime64("1995-01-01")


def test_ambiguous_dates_name_the_setting_for_each_reading(tmp_path):
    # 01-01..12-01: Jan 1..12 daily when day-first, Jan..Dec monthly when month-first: both regular
    stamps = [f"{d:02d}-01-2000" for d in range(1, 13)]
    with pytest.raises(DataError, match=r"read both day-first and month-first on a regular grid: set "
                                        r"data\.time_format: '%d-%m-%Y' \(CLI: --set data\.time_format=%d-%m-%Y\) "
                                        r"for day-first, or '%m-%d-%Y' for month-first") as err:
        load(write(tmp_path, stamps))
    assert "time zone" not in str(err.value)
    assert load(write(tmp_path, stamps), time_format="%d-%m-%Y").freq == "D"
    assert load(write(tmp_path, stamps), time_format="%m-%d-%Y").freq == "MS"


def test_time_format_is_applied_before_the_zone_check(tmp_path):
    # the old code read '-2000' as a UTC offset and asked for data.utc even with the format given
    series = load(write(tmp_path, list(MONTHS.strftime("%d-%m-%Y"))), time_format="%d-%m-%Y")
    assert series.tz is None  # local dates stay local: no UTC conversion was needed
    assert series.freq == "MS"


def test_a_wrong_time_format_names_itself(tmp_path):
    with pytest.raises(DataError, match=r"60 unparseable timestamps with data\.time_format '%Y-%m-%d', first "
                                        r"'01-01-2000' at line 2"):
        load(write(tmp_path, list(MONTHS.strftime("%d-%m-%Y"))), time_format="%Y-%m-%d")


def test_real_zone_offsets_after_a_time_are_still_checked(tmp_path):
    hours = pd.date_range("2024-01-01", periods=100, freq="h")
    stamps = list(hours.strftime("%Y-%m-%dT%H:%M+01:00"))
    stamps[50:] = list((hours[50:] + pd.Timedelta("1h")).strftime("%Y-%m-%dT%H:%M+02:00"))
    with pytest.raises(DataError, match=r"mixes time zones \(\+01:00 at line 2, \+02:00 at line 52"):
        load(write(tmp_path, stamps))
