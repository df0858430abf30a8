"""Issue 12, data layer: covariate roles in the config, integer time, static values, calendar features,
forecast timestamps and the future frame read at predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmcast.config import DataConfig, validate_config
from lstmcast.data import longtable
from lstmcast.data import validate as data_validate
from lstmcast.data.calendar import CALENDAR_NAMES, calendar_channel_names, calendar_features, calendar_for, future_times
from lstmcast.data.future import read_future
from lstmcast.data.io import read_table
from lstmcast.data.prepare import prepare, season_from_freq
from lstmcast.data.static import StaticValues, static_for
from lstmcast.data.validate import validate_frame
from lstmcast.errors import ConfigError
from lstmcast.inference.fastpath import future_times as fastpath_future_times


def data_cfg(**data) -> DataConfig:
    return validate_config({"data": {"horizon": 3, **data}}).data


def years(n: int = 100, start: int = 1871, step: int = 1, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"year": start + step * np.arange(n), "y": rng.standard_normal(n).cumsum()})


# -- config ------------------------------------------------------------------------------------------------
def test_config_new_roles_accept_comma_lists_and_default_to_nothing():
    d = data_cfg(future_features="price, holiday", static_features="region")
    assert d.future_features == ["price", "holiday"] and d.static_features == ["region"]
    default = DataConfig()
    assert default.future_features == [] and default.static_features == [] and default.calendar == "auto"


@pytest.mark.parametrize("given_, expected", [("auto", "auto"), ("none", "none"), (["day_of_week"], ["day_of_week"]),
                                              ("hour_of_day,day_of_week", ["hour_of_day", "day_of_week"]),
                                              ([], [])])
def test_config_calendar_forms(given_, expected):
    assert data_cfg(calendar=given_).calendar == expected


@pytest.mark.parametrize("given_, expected", [(1, 1), ("1", 1), (7, 7), ("h", "h"), ("W-SUN", "W-SUN"), (None, None)])
def test_config_freq_takes_an_integer_step_or_a_pandas_frequency(given_, expected):
    assert data_cfg(freq=given_).freq == expected


def test_config_calendar_vocabulary_is_the_calendar_modules():
    assert CALENDAR_NAMES == ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year",
                              "week_of_year", "month_of_year", "quarter_of_year")


# -- integer time ------------------------------------------------------------------------------------------
def _check_years(series, first: int = 1871, n: int = 100, step: int = 1):
    assert series.integer_time and series.freq == str(step) and series.tz is None
    assert series.times[0].dtype == np.int64
    assert series.times[0].tolist() == list(range(first, first + step * n, step))


def test_integer_years_from_a_dataframe_csv_and_parquet(tmp_path: Path):
    df = years()
    cfg = data_cfg(time_col="year", target="y")
    _check_years(validate_frame(read_table(df), cfg))
    df.to_csv(tmp_path / "y.csv", index=False)
    _check_years(validate_frame(read_table(tmp_path / "y.csv"), cfg))
    df.to_parquet(tmp_path / "y.parquet")
    _check_years(validate_frame(read_table(tmp_path / "y.parquet"), cfg))


def test_integer_step_inferred_or_given_and_series_values_kept():
    df = years(50, start=0, step=5)
    inferred = validate_frame(read_table(df), data_cfg(time_col="year", target="y"))
    given_ = validate_frame(read_table(df), data_cfg(time_col="year", target="y", freq=5))
    for s in (inferred, given_):
        _check_years(s, first=0, n=50, step=5)
        np.testing.assert_array_equal(s.values[0][:, 0], df["y"].to_numpy(np.float32))


def test_integer_time_unsorted_rows_are_sorted_and_gaps_filled_by_policy():
    df = years(30).drop(index=[5, 6, 20]).sample(frac=1, random_state=1)
    s = validate_frame(read_table(df), data_cfg(time_col="year", target="y", missing="interpolate"))
    assert s.times[0].tolist() == list(range(1871, 1901))
    assert not np.isnan(s.values[0]).any()
    assert any("not in time order" in n for n in s.notes)


def test_integer_freq_accepts_integer_text_in_a_dataframe():
    df = years(40).astype({"year": str})
    s = validate_frame(read_table(df), data_cfg(time_col="year", target="y", freq=1))
    _check_years(s, n=40)


def test_text_years_without_integer_freq_stay_dates_as_before():
    df = years(40).astype({"year": str})
    s = validate_frame(read_table(df), data_cfg(time_col="year", target="y"))
    assert not s.integer_time and s.times[0].dtype == np.dtype("datetime64[ns]")
    assert pd.Timestamp(s.times[0][0]) == pd.Timestamp("1871-01-01")


def test_integer_dates_read_as_dates_with_time_format():
    days = pd.date_range("2024-01-20", periods=30, freq="D")
    df = pd.DataFrame({"d": days.strftime("%Y%m%d").astype(int), "y": np.arange(30.0)})
    s = validate_frame(read_table(df), data_cfg(time_col="d", target="y", time_format="%Y%m%d"))
    assert not s.integer_time and s.freq == "D"
    np.testing.assert_array_equal(s.times[0], days.to_numpy("datetime64[ns]"))


def test_large_step_numbers_with_integer_freq_are_integer_time():
    df = years(30, start=1_700_000_000, step=3600)
    s = validate_frame(read_table(df), data_cfg(time_col="year", target="y", freq=3600))
    _check_years(s, first=1_700_000_000, n=30, step=3600)


def _long_years(n_series: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n_series):
        length = int(rng.integers(8, 30))
        t = 1900 + 2 * np.arange(length)
        keep = rng.random(length) > (0.25 if i % 2 else 0.0)
        keep[0] = keep[-1] = True
        parts.append(pd.DataFrame({"id": f"s{i}", "t": t[keep], "y": rng.standard_normal(keep.sum()),
                                   "x": rng.random(keep.sum()), "p": rng.random(keep.sum())}))
    return pd.concat(parts).sample(frac=1, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("missing", ["interpolate", "ffill", "drop-windows"])
def test_long_integer_time_fast_path_and_loop_agree(monkeypatch, missing):
    df = _long_years()
    cfg = data_cfg(time_col="t", target="y", features="x", future_features="p", id_col="id", missing=missing)
    decided = []
    real = longtable.validate_long

    def spy(*args):
        out = real(*args)
        decided.append(out is not None)
        return out

    monkeypatch.setattr(data_validate, "validate_long", spy)
    fast = validate_frame(read_table(df, None, "id"), cfg)
    monkeypatch.setattr(data_validate, "validate_long", lambda *a: None)
    loop = validate_frame(read_table(df, None, "id"), cfg)
    assert decided == [True]
    assert fast.ids == loop.ids and fast.freq == loop.freq == "2" and fast.integer_time and loop.integer_time
    for a, b, c, d in zip(fast.times, loop.times, fast.values, loop.values):
        assert a.dtype == b.dtype == np.int64 and np.array_equal(a, b)
        assert np.array_equal(c, d, equal_nan=True)


def test_long_integer_time_from_csv_with_text_ids(tmp_path: Path):
    df = _long_years().replace({"id": {"s0": "007"}})
    df.to_csv(tmp_path / "long.csv", index=False)
    cfg = data_cfg(time_col="t", target="y", id_col="id", missing="interpolate")
    s = validate_frame(read_table(tmp_path / "long.csv", None, "id"), cfg)
    assert s.integer_time and s.freq == "2" and "007" in s.ids
    assert all(t.dtype == np.int64 and np.all(np.diff(t) == 2) for t in s.times)


def test_integer_time_season_is_none_unless_set_and_prepare_runs():
    assert season_from_freq("1") is None and season_from_freq("12") is None
    series = validate_frame(read_table(years(120)), data_cfg(time_col="year", target="y"))
    assert prepare(series, data_cfg(time_col="year", target="y")).season is None
    assert prepare(series, data_cfg(time_col="year", target="y", season=11)).season == 11


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=3, max_size=40, unique=True), st.integers(1, 7),
       st.integers(-10_000, 10_000))
def test_integer_grid_property(offsets, step, start):
    """Any set of integer times on a step grid: filled to the full grid, each value at its own time."""
    t = start + step * np.array(sorted(offsets))
    y = np.arange(len(t), dtype=np.float64)
    df = pd.DataFrame({"t": t, "y": y}).sample(frac=1, random_state=0)
    s = validate_frame(read_table(df), data_cfg(time_col="t", target="y", freq=step, missing="drop-windows"))
    grid = s.times[0]
    assert grid[0] == t[0] and grid[-1] == t[-1] and np.all(np.diff(grid) == step)
    pos = (t - t[0]) // step
    np.testing.assert_array_equal(s.values[0][pos, 0], y.astype(np.float32))
    assert np.isnan(np.delete(s.values[0][:, 0], pos)).all()


# -- channels: future features; calendar adds none -----------------------------------------------------------
def test_future_features_are_the_last_channels():
    df = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=40, freq="h"), "y": np.arange(40.0),
                       "x": np.ones(40), "p": np.arange(40.0) * 2, "q": np.arange(40.0) * 3})
    s = validate_frame(read_table(df), data_cfg(time_col="t", target="y", features="x", future_features="q,p"))
    assert s.channel_names == ["y", "x", "q", "p"] and s.n_past_only == 2 and s.future_features == ["q", "p"]
    np.testing.assert_array_equal(s.values[0][:, 2:], df[["q", "p"]].to_numpy(np.float32))


def test_wide_layout_future_features_follow_each_series():
    df = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=40, freq="D"), "a": np.arange(40.0),
                       "b": -np.arange(40.0), "p": np.full(40, 7.0)})
    s = validate_frame(read_table(df), data_cfg(time_col="t", format="wide", future_features="p"))
    assert s.layout == "wide" and s.ids == ["a", "b"] and s.channel_names == ["value", "p"] and s.n_past_only == 1
    assert all(np.all(v[:, 1] == 7.0) for v in s.values)


def test_calendar_setting_does_not_change_the_series():
    df = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=60, freq="h"), "y": np.sin(np.arange(60.0))})
    auto = validate_frame(read_table(df), data_cfg(time_col="t", target="y"))
    none = validate_frame(read_table(df), data_cfg(time_col="t", target="y", calendar="none"))
    assert auto.channel_names == none.channel_names == ["y"]
    assert np.array_equal(auto.values[0], none.values[0]) and auto.static is None


# -- static values ---------------------------------------------------------------------------------------------
def _statics() -> pd.DataFrame:
    rows = []
    for sid, region, cap, n in (("b", "north", 2.5, 12), ("a", "south", 1.0, 10), ("c", "north", 4.0, 11)):
        t = pd.date_range("2024-01-01", periods=n, freq="D")
        rows.append(pd.DataFrame({"id": sid, "t": t, "y": np.arange(n, dtype=float), "region": region,
                                  "cap": cap, "level": 3}))
    return pd.concat(rows, ignore_index=True)


def test_static_values_split_numeric_and_categorical_in_series_order():
    cfg = data_cfg(time_col="t", target="y", id_col="id", static_features="region,cap,level")
    s = validate_frame(read_table(_statics(), None, "id"), cfg)
    sv = s.static
    assert isinstance(sv, StaticValues) and sv.ids == s.ids == ["a", "b", "c"]
    assert sv.numeric_names == ["cap", "level"] and sv.categorical_names == ["region"]
    assert sv.names == ["cap", "level", "region"]
    assert sv.numeric.dtype == np.float64 and sv.numeric.tolist() == [[1.0, 3.0], [2.5, 3.0], [4.0, 3.0]]
    assert sv.categorical.tolist() == [["south"], ["north"], ["north"]]
    assert s.channel_names == ["y"]  # statics are not value channels


def test_static_for_a_new_series_reads_its_own_rows_and_take_reorders():
    cfg = data_cfg(time_col="t", target="y", id_col="id", static_features="region,cap")
    new = _statics().replace({"id": {"c": "zz"}})
    sv = static_for(read_table(new, None, "id"), cfg, ["zz", "a"])
    assert sv.ids == ["zz", "a"] and sv.numeric[:, 0].tolist() == [4.0, 1.0]
    assert sv.categorical[:, 0].tolist() == ["north", "south"]
    assert sv.take(["a"]).numeric.tolist() == [[1.0]]


def test_static_text_from_csv_ids_kept_as_written(tmp_path: Path):
    df = _statics().replace({"id": {"a": "01", "b": "1"}})
    df.to_csv(tmp_path / "s.csv", index=False)
    cfg = data_cfg(time_col="t", target="y", id_col="id", static_features="region,cap")
    s = validate_frame(read_table(tmp_path / "s.csv", None, "id"), cfg)
    assert s.ids == ["01", "1", "c"] and s.static.numeric[:, 0].tolist() == [1.0, 2.5, 4.0]


def test_single_series_statics():
    df = _statics().query("id == 'a'").drop(columns="id")
    s = validate_frame(read_table(df), data_cfg(time_col="t", target="y", static_features="region"))
    assert s.static.ids == [""] and s.static.categorical.tolist() == [["south"]]


# -- calendar -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("freq, expected", [
    ("min", ["hour_of_day", "day_of_week"]), ("15min", ["hour_of_day", "day_of_week"]),
    ("h", ["hour_of_day", "day_of_week"]), ("6h", ["hour_of_day", "day_of_week"]),
    ("D", []), ("B", []), ("W-SUN", []), ("7D", []), ("MS", []), ("ME", []), ("QS", []), ("YS", []), ("YE", [])])
def test_calendar_auto_by_frequency(freq, expected):
    assert calendar_for(freq, "auto", integer_time=False) == expected


def test_calendar_none_list_and_integer_time():
    assert calendar_for("h", "none", integer_time=False) == []
    assert calendar_for("h", ["day_of_week", "day_of_month"], integer_time=False) == ["day_of_week", "day_of_month"]
    assert calendar_for("15min", ["minute_of_hour"], integer_time=False) == ["minute_of_hour"]
    assert calendar_for("1", "auto", integer_time=True) == []
    assert calendar_for("1", "none", integer_time=True) == []


def test_calendar_features_known_positions():
    t = np.array(["2024-01-01T00:00", "2024-01-01T06:00", "2024-01-01T12:00", "2024-01-04T00:00"],
                 dtype="datetime64[ns]")
    out = calendar_features(t, ["hour_of_day", "day_of_week"])
    assert out.dtype == np.float32 and out.shape == (4, 4)
    np.testing.assert_allclose(out[:, 0], [0, 1, 0, 0], atol=1e-6)  # sin of the hour position
    np.testing.assert_allclose(out[:, 1], [1, 0, -1, 1], atol=1e-6)
    np.testing.assert_allclose(out[3, 2:], [np.sin(2 * np.pi * 3 / 7), np.cos(2 * np.pi * 3 / 7)], atol=1e-6)
    assert calendar_channel_names(["hour_of_day", "day_of_week"]) == [
        "hour_of_day_sin", "hour_of_day_cos", "day_of_week_sin", "day_of_week_cos"]
    assert calendar_features(t, []).shape == (4, 0)


def test_calendar_features_in_the_series_zone():
    t = np.array(["2024-07-01T22:00"], dtype="datetime64[ns]")  # UTC: midnight in Berlin (UTC+2 in summer)
    out = calendar_features(t, ["hour_of_day"], tz="Europe/Berlin")
    np.testing.assert_allclose(out[0], [0.0, 1.0], atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-2_000_000_000, 2_000_000_000), min_size=1, max_size=30),
       st.lists(st.sampled_from(CALENDAR_NAMES), min_size=1, max_size=8, unique=True))
def test_calendar_features_property(seconds, names):
    t = (np.array(seconds, dtype=np.int64) * 10**9).view("datetime64[ns]")
    out = calendar_features(t, names)
    assert out.shape == (len(t), 2 * len(names)) and np.all(np.abs(out) <= 1.0)
    np.testing.assert_allclose(out[:, 0::2] ** 2 + out[:, 1::2] ** 2, 1.0, atol=1e-5)


# -- forecast timestamps ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("freq", ["h", "15min", "D", "W-SUN", "MS", "QE", "B"])
def test_future_times_match_pandas_date_range(freq):
    last = pd.date_range("2023-11-03", periods=3, freq=freq)[-1]
    got = future_times(np.datetime64(last, "ns"), freq, 10, integer_time=False)
    expected = pd.date_range(last, periods=11, freq=freq)[1:].to_numpy("datetime64[ns]")
    assert got.dtype == np.dtype("datetime64[ns]") and np.array_equal(got, expected)


def test_future_times_zoned_daily_and_fastpath_agree():
    last = np.datetime64("2024-03-29T23:00", "ns")  # midnight in Berlin before the DST switch of 03-31
    got = future_times(last, "D", 4, integer_time=False, tz="Europe/Berlin")
    local = pd.DatetimeIndex(got).tz_localize("UTC").tz_convert("Europe/Berlin")
    assert [str(t) for t in local] == ["2024-03-31 00:00:00+01:00", "2024-04-01 00:00:00+02:00",
                                       "2024-04-02 00:00:00+02:00", "2024-04-03 00:00:00+02:00"]
    assert list(fastpath_future_times(last, 4, "D", "Europe/Berlin")) == list(local)


def test_tick_ns_is_none_for_an_integer_step():
    from lstmcast.data.calendar import tick_ns

    assert tick_ns("1") is None and tick_ns("12") is None and tick_ns("D") is None
    assert tick_ns("h") == 3600 * 10**9


def test_future_times_integer():
    assert future_times(np.int64(1970), "1", 3, integer_time=True).tolist() == [1971, 1972, 1973]
    got = future_times(40, "5", 2, integer_time=True)
    assert got.dtype == np.int64 and got.tolist() == [45, 50]


# -- the future frame -------------------------------------------------------------------------------------------
def _future_long(ids, lasts, H: int, extra: int = 0) -> pd.DataFrame:
    rows = []
    for sid, last in zip(ids, lasts):
        for k in range(1, H + extra + 1):
            rows.append({"id": sid, "t": last + np.timedelta64(k, "h"), "p": 10.0 * k + len(sid), "q": -k})
    return pd.DataFrame(rows).sample(frac=1, random_state=0)


def test_read_future_long_in_series_order_and_rows_after_the_horizon_ignored():
    cfg = data_cfg(time_col="t", target="y", id_col="id", future_features="q,p")
    lasts = np.array(["2024-01-05T03", "2024-01-02T00"], dtype="datetime64[ns]")
    fut = _future_long(["bb", "a"], lasts, 3, extra=5)
    out = read_future(fut, cfg, ["bb", "a"], lasts, 3, "h", False)
    assert out.shape == (2, 3, 2) and out.dtype == np.float32
    assert out[:, :, 0].tolist() == [[-1, -2, -3]] * 2
    assert out[:, :, 1].tolist() == [[12, 22, 32], [11, 21, 31]]
    rev = read_future(fut, cfg, ["a", "bb"], lasts[::-1], 3, "h", False)
    np.testing.assert_array_equal(rev, out[::-1])


def test_read_future_csv_path_single_series(tmp_path: Path):
    cfg = data_cfg(time_col="t", target="y", future_features="p")
    pd.DataFrame({"t": pd.date_range("2024-01-01 01:00", periods=4, freq="h"), "p": [1, 2, 3, 4]}).to_csv(
        tmp_path / "f.csv", index=False)
    out = read_future(tmp_path / "f.csv", cfg, [""], [np.datetime64("2024-01-01T00", "ns")], 3, "h", False)
    assert out[0, :, 0].tolist() == [1, 2, 3]


def test_read_future_integer_time_and_no_future_features():
    cfg = data_cfg(time_col="year", target="y", future_features="p")
    fut = pd.DataFrame({"year": [1971, 1972, 1973], "p": [0.5, 1.5, 2.5]})
    out = read_future(fut, cfg, [""], [np.int64(1970)], 2, "1", True)
    assert out[0, :, 0].tolist() == [0.5, 1.5]
    none = read_future(None, data_cfg(time_col="year", target="y"), ["a", "b"], [1, 2], 4, "1", True)
    assert none.shape == (2, 4, 0)


def test_read_future_wide_rows_serve_every_series():
    cfg = data_cfg(time_col="t", format="wide", future_features="p")
    fut = pd.DataFrame({"t": pd.date_range("2024-01-02", periods=2, freq="D"), "p": [3.0, 4.0]})
    last = np.datetime64("2024-01-01", "ns")
    out = read_future(fut, cfg, ["a", "b"], [last, last], 2, "D", False)
    assert out[:, :, 0].tolist() == [[3.0, 4.0], [3.0, 4.0]]


def test_config_rejects_nothing_new_by_default():
    with pytest.raises(ConfigError):  # the old checks still hold
        validate_config({"data": {"target": ["y", "y"]}})
