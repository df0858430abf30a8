"""FAULTS D17 (known-future covariates at predict), D18 (static covariates), the covariate config roles
and integer time: each bad input gets an error naming what, where and the fix (issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstmcast.config import DataConfig, load_config, validate_config
from lstmcast.data.calendar import calendar_features, calendar_for, future_times
from lstmcast.data.future import read_future
from lstmcast.data.io import read_table
from lstmcast.data.validate import validate_frame
from lstmcast.errors import ConfigError, DataError


def data_cfg(**data) -> DataConfig:
    return validate_config({"data": {"horizon": 3, **data}}).data


def load(source, **data):
    """Read (a path or a DataFrame) and validate, as fit does."""
    cfg = data_cfg(**data)
    return validate_frame(read_table(source, None, cfg.id_col), cfg)


# -- config roles -----------------------------------------------------------------------------------------------
def test_all_role_conflicts_reported_together_naming_column_and_both_roles():
    with pytest.raises(ConfigError) as err:
        validate_config({"data": {"time_col": "t", "target": "y", "features": "x", "future_features": "x,p",
                                  "static_features": "p,r", "id_col": "r"}})
    text = str(err.value)
    assert "2 problems" not in text and "3 problems" in text
    assert "data.features 'x' is also listed in data.future_features" in text
    assert "data.future_features 'p' is also listed in data.static_features" in text
    assert "data.id_col 'r' is also listed in data.static_features: pick one role" in text


@pytest.mark.parametrize("data, match", [
    ({"time_col": "y", "target": "y"}, r"data.time_col 'y' is also listed in data.target"),
    ({"target": "y", "future_features": "y"}, r"data.target 'y' is also listed in data.future_features"),
    ({"id_col": "t", "time_col": "t"}, r"data.id_col 't' is also listed in data.time_col"),
    ({"future_features": "a,b,a"}, r"data.future_features lists \['a'\] more than once"),
    ({"static_features": ["r", "r"]}, r"data.static_features lists \['r'\] more than once"),
    ({"calendar": "hour_of_dy"}, r"unknown calendar feature 'hour_of_dy' \(did you mean 'hour_of_day'\?\)"),
    ({"calendar": ["day_of_week", "day_of_week"]}, r"data.calendar must name each feature once"),
    ({"calendar": 5}, r"data.calendar: unknown calendar feature 5"),
    ({"freq": 0}, r"data.freq: an integer time step must be a whole number >= 1"),
    ({"freq": 1.5}, r"data.freq: an integer time step must be a whole number >= 1"),
    ({"freq": True}, r"data.freq: a boolean"),
])
def test_config_covariate_problems(data, match):
    with pytest.raises(ConfigError, match=match):
        validate_config({"data": data})


def test_config_override_reports_calendar_and_role_problems_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.calendar=dayofweek", "data.target=y", "data.static_features=y"])
    assert "did you mean 'day_of_week'" in str(err.value) and "also listed in data.static_features" in str(err.value)


# -- calendar ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("freq, names, match", [
    ("D", ["hour_of_day"], r"hour_of_day is constant on 'D' data"),
    ("W-SUN", ["day_of_week", "week_of_year"], r"day_of_week is constant on 'W-SUN' data"),
    ("MS", ["month_of_year", "day_of_month"], r"day_of_month is constant on 'MS' data"),
    ("YS", ["month_of_year"], r"month_of_year is constant"),
])
def test_calendar_feature_constant_at_the_frequency_is_refused(freq, names, match):
    with pytest.raises(ConfigError, match=match + r".*remove it from data.calendar"):
        calendar_for(freq, names, integer_time=False)


def test_calendar_list_with_integer_time_and_unknown_names():
    with pytest.raises(ConfigError, match=r"integer time.*set data.calendar: none"):
        calendar_for("1", ["day_of_week"], integer_time=True)
    with pytest.raises(ConfigError, match=r"did you mean 'month_of_year'"):
        calendar_for("D", ["month_of_yaer"], integer_time=False)
    with pytest.raises(DataError, match=r"need timestamps.*set data.calendar: none"):
        calendar_features(np.arange(5, dtype=np.int64), ["day_of_week"])


def test_future_times_past_the_representable_range():
    with pytest.raises(DataError, match=r"run past 9223372036854775807.*renumber"):
        future_times(np.int64(2**63 - 3), "1", 5, integer_time=True)
    with pytest.raises(DataError, match=r"run past 2262-04-11"):
        future_times(np.datetime64("2262-04-10", "ns"), "D", 5, integer_time=False)


# -- integer time -----------------------------------------------------------------------------------------------
def _ints(t, **extra) -> pd.DataFrame:
    return pd.DataFrame({"t": np.asarray(t, dtype=np.int64), "y": np.arange(len(t), dtype=float), **extra})


def test_integer_duplicates_name_the_value_and_both_rows(tmp_path: Path):
    _ints([1, 2, 3, 3, 4, 5]).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"1 duplicated timestamps: 3 at line 4 and line 5"):
        load(tmp_path / "d.csv", time_col="t", target="y")


def test_integer_irregular_steps_list_the_steps_and_the_fix():
    with pytest.raises(DataError, match=r"not on a regular grid of integer times: observed steps 2 \(5x\), 3 \(1x\);"
                                        r" the first step that is not a multiple of 2 is 3 \(from 6 to 9, row 3 and "
                                        r"row 4\)\. Set data.freq to the intended integer step"):
        load(_ints([0, 2, 4, 6, 9, 11, 13]), time_col="t", target="y")


def test_integer_off_grid_with_given_step():
    with pytest.raises(DataError, match=r"times 8 \(at row 3\) are off the grid of step 2 starting at 1"):
        load(_ints([1, 3, 5, 8, 9, 11]), time_col="t", target="y", freq=2)


def test_integer_gaps_listed_with_ranges_and_policy():
    with pytest.raises(DataError, match=r"has 6 missing times \(gaps\) on the grid of step 1: 3, 6\.\.9, 12\. "
                                        r"Set data.missing"):
        load(_ints([1, 2, 4, 5, 10, 11, 13]), time_col="t", target="y")


def test_integer_gap_too_large_to_fill_is_refused_without_building_it():
    with pytest.raises(DataError, match=r"missing times \(gaps\).*2\.\.999999999999"):
        load(_ints([0, 1, 10**12, 10**12 + 1]), time_col="t", target="y", freq=1)
    with pytest.raises(DataError, match=r"filling its gaps would add"):
        load(_ints([0, 1, 10**12, 10**12 + 1]), time_col="t", target="y", freq=1, missing="interpolate")


@pytest.mark.parametrize("start, step, unit", [(1_700_000_000, 3600, "s"), (1_700_000_000_000, 3_600_000, "ms"),
                                               (1_700_000_000 * 10**9, 3600 * 10**9, "ns")])
def test_epoch_integers_are_not_silently_integer_time(start, step, unit):
    df = _ints(start + step * np.arange(30))
    with pytest.raises(DataError, match=r"look like timestamps counted since 1970.*pd.to_datetime.*data.freq"):
        load(df, time_col="t", target="y")
    assert load(df, time_col="t", target="y", freq=step).integer_time  # an integer freq says they are steps


def test_epoch_parquet_integers_refused(tmp_path: Path):
    _ints(1_700_000_000 + 3600 * np.arange(30)).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"look like timestamps counted since 1970"):
        load(tmp_path / "e.parquet", time_col="t", target="y")


@pytest.mark.parametrize("stamps, fmt", [(pd.date_range("2024-01-20", periods=30, freq="D"), "%Y%m%d"),
                                         (pd.date_range("2020-01-01", periods=30, freq="MS"), "%Y%m")])
def test_integer_dates_are_not_silently_integer_time(stamps, fmt):
    df = _ints(stamps.strftime(fmt).astype(int))
    with pytest.raises(DataError, match=rf"read as dates written .*set data.time_format: '{fmt}'"):
        load(df, time_col="t", target="y")


def test_integer_column_with_a_calendar_freq_and_dates_with_an_integer_freq():
    with pytest.raises(DataError, match=r"holds integers \(first 1\) but data.freq is 'D'.*integer step"):
        load(_ints(np.arange(1, 20)), time_col="t", target="y", freq="D")
    dates = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=20, freq="D"), "y": np.arange(20.0)})
    with pytest.raises(DataError, match=r"data.freq is the integer step 1 but time column 't' holds dates"):
        load(dates, time_col="t", target="y", freq=1)


def test_integer_time_with_a_time_zone_option_is_still_integer():
    s = load(_ints(np.arange(10, 40)), time_col="t", target="y", utc=True)
    assert s.integer_time and s.tz is None


# -- future features in the training data: same invariants as features -------------------------------------------
@pytest.mark.parametrize("bad, match", [
    (np.nan, r"missing values: column 'p': 1 empty cells, first at row 4"),
    (np.inf, r"column 'p' holds 1 infinite values at row 4"),
    (1e39, r"column 'p' holds 1 values beyond the float32 range"),
    ("abc", r"column 'p' must be numeric but holds text: 'abc' at row 4"),
])
def test_future_feature_columns_checked_like_features(bad, match):
    df = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=20, freq="h"), "y": np.arange(20.0),
                       "p": np.arange(20.0)}).astype({"p": object})
    df.loc[4, "p"] = bad
    with pytest.raises(DataError, match=match):
        load(df, time_col="t", target="y", future_features="p")


def test_future_feature_column_misspelled():
    df = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=20, freq="h"), "y": np.arange(20.0),
                       "price": np.arange(20.0)})
    with pytest.raises(DataError, match=r"data.future_features 'prize' is not a column.*did you mean 'price'"):
        load(df, time_col="t", target="y", future_features="prize")


# -- D18: static covariates ---------------------------------------------------------------------------------------
def _statics(n: int = 8) -> pd.DataFrame:
    parts = [pd.DataFrame({"id": sid, "t": pd.date_range("2024-01-01", periods=n, freq="D"),
                           "y": np.arange(n, dtype=float), "region": region, "cap": cap})
             for sid, region, cap in (("a", "north", 1.0), ("b", "south", 2.0))]
    return pd.concat(parts, ignore_index=True)


def test_d18_static_that_changes_names_series_column_values_and_rows(tmp_path: Path):
    df = _statics()
    df.loc[11, "region"] = "east"  # series 'b', its 4th row
    df.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(DataError, match=r"series 'b': static feature 'region' changes within the series: 'south' at "
                                        r"line 10 but 'east' at line 13\. A static feature holds one value per series"):
        load(tmp_path / "s.csv", time_col="t", target="y", id_col="id",
             static_features="region")


def test_d18_numeric_static_that_changes():
    df = _statics()
    df.loc[3, "cap"] = 1.5
    with pytest.raises(DataError, match=r"series 'a': static feature 'cap' changes within the series: 1\.0 at row 0 "
                                        r"but 1\.5 at row 3"):
        load(df, time_col="t", target="y", id_col="id", static_features="cap,region")


@pytest.mark.parametrize("col, value", [("region", None), ("region", "  "), ("cap", np.nan)])
def test_d18_missing_static_names_series_and_column(col, value):
    df = _statics().astype({col: object})
    df.loc[[9, 12], col] = value
    with pytest.raises(DataError, match=rf"series 'b': static feature '{col}' is missing \(empty\) at row 9, row 12"):
        load(df, time_col="t", target="y", id_col="id", static_features=col)


def test_static_not_finite_and_wide_layout_and_misspelled():
    df = _statics()
    df["cap"] = np.where(df["id"] == "a", np.inf, 2.0)
    with pytest.raises(DataError, match=r"series 'a': static feature 'cap' is inf, not a finite number"):
        load(df, time_col="t", target="y", id_col="id", static_features="cap")
    wide = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=20, freq="D"), "a": np.arange(20.0),
                         "b": np.arange(20.0), "r": 1.0})
    with pytest.raises(DataError, match=r"need a long table"):
        load(wide, time_col="t", target="a,b", format="wide", static_features="r")
    with pytest.raises(DataError, match=r"data.static_features 'regio' is not a column.*did you mean 'region'"):
        load(_statics(), time_col="t", target="y", id_col="id", static_features="regio")


def test_static_for_series_without_rows():
    from lstmcast.data.static import static_for

    cfg = data_cfg(time_col="t", target="y", id_col="id", static_features="region")
    with pytest.raises(DataError, match=r"no rows for series 'zz' to read static features"):
        static_for(read_table(_statics(), None, "id"), cfg, ["a", "zz"])


# -- D17: the future frame at predict -----------------------------------------------------------------------------
LASTS = np.array(["2024-01-05T03", "2024-01-02T00"], dtype="datetime64[ns]")
IDS = ["a", "b"]


def _future(H: int = 4) -> pd.DataFrame:
    rows = [{"id": sid, "t": last + np.timedelta64(k, "h"), "price": float(k)}
            for sid, last in zip(IDS, LASTS) for k in range(1, H + 1)]
    return pd.DataFrame(rows)


def _read(fut, H: int = 3, **data):
    cfg = data_cfg(time_col="t", target="y", id_col="id", future_features="price", **data)
    return read_future(fut, cfg, IDS, LASTS, H, "h", False)


def test_d17_missing_column_with_did_you_mean():
    with pytest.raises(DataError, match=r"data.future_features 'price' is not a column of the future DataFrame "
                                        r"\(did you mean 'Price'\?\)"):
        _read(_future().rename(columns={"price": "Price"}))
    with pytest.raises(DataError, match=r"data.id_col 'id' is not a column"):
        _read(_future().drop(columns="id"))


def test_d17_missing_steps_name_series_and_times():
    fut = _future().drop(index=[5, 6])  # series 'b', its steps 2 and 3
    with pytest.raises(DataError, match=r"series 'b': the future frame misses 2 of the 3 horizon steps: "
                                        r"2024-01-02 02:00:00, 2024-01-02 03:00:00\. Add those rows"):
        _read(fut)


def test_d17_many_missing_steps_are_listed_briefly():
    fut = _future(30)
    fut = fut[(fut["id"] == "b") | (fut.index < 2)]
    with pytest.raises(DataError) as err:
        _read(fut, H=30)
    assert "misses 28 of the 30 horizon steps" in str(err.value) and "and 23 more" in str(err.value)
    assert len(str(err.value)) < 400


def test_d17_series_without_rows():
    with pytest.raises(DataError, match=r"has no rows for series 'b' \(id column 'id'\)"):
        _read(_future().query("id == 'a'"))


def test_d17_rows_that_do_not_continue_the_series():
    # history rows (at or before the last observed time) are ignored: one file can hold history and future
    before = pd.concat([_future(), pd.DataFrame([{"id": "a", "t": LASTS[0], "price": 99.0}])], ignore_index=True)
    np.testing.assert_array_equal(_read(before), _read(_future()))
    off = pd.concat([_future(), pd.DataFrame([{"id": "b", "t": LASTS[1] + np.timedelta64(90, "m"), "price": 1.0}])],
                    ignore_index=True)
    with pytest.raises(DataError, match=r"series 'b': the future frame has rows between the steps of its time grid "
                                        r"\(off the grid\): row 8 \(times 2024-01-02 01:30:00\)"):
        _read(off)
    twice = pd.concat([_future(), _future().iloc[[1]]], ignore_index=True)
    with pytest.raises(DataError, match=r"series 'a': time 2024-01-05 05:00:00 has 2 rows in the future frame "
                                        r"\(row 1, row 8\)"):
        _read(twice)


def test_d17_rows_after_the_horizon_may_be_anything():
    fut = pd.concat([_future(), pd.DataFrame([{"id": "a", "t": LASTS[0] + np.timedelta64(610, "m"),
                                               "price": np.nan}])], ignore_index=True)
    fut.loc[3, "price"] = np.nan  # series 'a', step 4 > H = 3
    assert _read(fut)[:, :, 0].tolist() == [[1, 2, 3], [1, 2, 3]]


_BIG = r"is infinite or beyond the float32 range \(\|x\| > 3.4e38\)"


@pytest.mark.parametrize("value, why", [(np.nan, r"is empty \(NaN\)"), (np.inf, _BIG), (1e39, _BIG),
                                        ("n/a!", r"holds text \('n/a!'\)")])
def test_d17_bad_values_name_series_column_and_rows(value, why):
    fut = _future().astype({"price": object})
    fut.loc[[5, 6], "price"] = value
    with pytest.raises(DataError, match=rf"series 'b': future feature 'price' {why} at row 5, row 6: every horizon "
                                        r"step needs a finite number"):
        _read(fut)


def test_d17_no_future_frame_and_wrong_time_kind():
    with pytest.raises(DataError, match=r"uses known-future covariates \['price'\]: give the next 3 rows.*--future"):
        _read(None)
    with pytest.raises(DataError, match=r"time column 't' must hold dates as the training data did \(first value 1\)"):
        _read(_future().assign(t=np.arange(1, 9)))


def test_d17_unreadable_future_file_points_at_future_option(tmp_path: Path):
    with pytest.raises(DataError, match=r"future covariates: data file .*nope.csv' does not exist: check --future"):
        _read(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("id,t,price\n")
    with pytest.raises(DataError, match=r"future covariates: .*header but no data rows"):
        _read(tmp_path / "bad.csv")


def test_d17_future_csv_lines_named(tmp_path: Path):
    fut = _future()
    fut.loc[2, "price"] = np.nan
    fut.to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(DataError, match=r"series 'a': future feature 'price' is empty \(NaN\) at line 4"):
        _read(tmp_path / "f.csv")


def test_d17_integer_time_future_errors_print_integers():
    cfg = data_cfg(time_col="year", target="y", future_features="p")
    fut = pd.DataFrame({"year": [1969, 1971, 1973], "p": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"the series: the future frame misses 1 of the 3 horizon steps: 1972\."):
        read_future(fut, cfg, [""], [np.int64(1970)], 3, "1", True)  # 1969 is history: ignored
    with pytest.raises(DataError, match=r"the series: the future frame misses 1 of the 3 horizon steps: 1972\."):
        read_future(fut.iloc[1:], cfg, [""], [np.int64(1970)], 3, "1", True)
    with pytest.raises(DataError, match=r"must hold integer steps as the training data did"):
        read_future(fut.assign(year=pd.date_range("2024-01-01", periods=3)), cfg, [""], [np.int64(1970)], 3, "1",
                    True)
