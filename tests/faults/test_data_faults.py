"""FAULTS.md D1-D13: every bad input gets a clear error (what, where, how to fix) or an explicit policy.

Each row is tested through the Python API; a representative subset also through the CLI, where the
exit code must be 3 and nothing may be written (no run folder, no stray temp files).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lstmcast import Forecaster
from lstmcast.config import validate_config
from lstmcast.data.io import bundled_path, read_table
from lstmcast.data.prepare import prepare
from lstmcast.data.validate import validate_frame
from lstmcast.data.windows import Roles, gather
from lstmcast.errors import ConfigError, DataError
from tests.conftest import run_cli, seasonal_frame, small_config


def load(source, precision: str = "fp32", **data):
    """Read + validate + prepare with small_config(data=...); what Forecaster.fit does before training."""
    cfg = validate_config(small_config(data=data))
    series = validate_frame(read_table(source, cfg.data.delimiter), cfg.data, precision)
    return series, prepare(series, cfg.data, precision)


def write_csv(df: pd.DataFrame, path: Path, **kw) -> Path:
    df.to_csv(path, index=False, **kw)
    return path


def cli_train_fails(tmp_path: Path, data: Path, *args: str):
    """Run `lstmcast train` on bad data: exit 3, no run folder, nothing else written next to the data."""
    before = sorted(p.name for p in tmp_path.iterdir())
    run_dir = tmp_path / "run"
    res = run_cli("train", "--data", str(data), *args, "--run", str(run_dir), cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    assert not run_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no stray temp files, no runs/ folder
    return res.stderr


CLI_ARGS = ("--time-col", "time", "--target", "y", "--window", "24", "--horizon", "6")


# -- D1 missing values ----------------------------------------------------------------------------
def test_d1_nan_cells_named_with_column_count_and_rows():
    df = seasonal_frame(300)
    df.loc[[5, 9, 40], "y"] = np.nan
    with pytest.raises(DataError, match=r"column 'y': 3 empty cells, first at row 5, row 9, row 40.*"
                                        r"data\.missing: interpolate \| ffill \| drop-windows"):
        load(df)


def test_d1_nan_in_a_feature_column_is_named():
    df = seasonal_frame(300).assign(temp=1.0)
    df["temp"] = np.arange(300.0)
    df.loc[7, "temp"] = np.nan
    with pytest.raises(DataError, match=r"column 'temp': 1 empty cells, first at row 7"):
        load(df, features=["temp"])


@pytest.mark.parametrize("policy", ["interpolate", "ffill"])
def test_d1_fill_policies_leave_no_nan(policy):
    df = seasonal_frame(300)
    df.loc[[0, 5, 6, 299], "y"] = np.nan
    series, prep = load(df, missing=policy)
    assert np.isfinite(series.values[0]).all()
    assert np.isfinite(prep.scaled).all()
    if policy == "interpolate":  # linear between the neighbours
        y = df["y"].to_numpy()
        assert series.values[0][5, 0] == pytest.approx(y[4] + (y[7] - y[4]) / 3, rel=1e-5)


def test_d1_bundled_co2_refused_without_policy_and_accepted_with_interpolate():
    with pytest.raises(DataError, match=r"column 'co2': 59 empty cells, first at line 8, line 11.*data\.missing"):
        load(str(bundled_path()), time_col="date", target="co2", horizon=52, window=104)
    series, prep = load(str(bundled_path()), time_col="date", target="co2", horizon=52, window=104,
                        missing="interpolate")
    assert series.freq == "W-SAT"
    assert np.isfinite(prep.scaled).all()


def test_d1_cli_refuses_bundled_co2_without_policy(tmp_path):
    err = cli_train_fails(tmp_path, bundled_path(), "--time-col", "date", "--target", "co2", "--horizon", "52")
    assert "column 'co2': 59 empty cells" in err
    assert "--set data.missing=interpolate" in err


def test_d1_drop_windows_never_lets_nan_reach_the_loss():
    df = seasonal_frame(400)
    df.loc[[30, 31, 150, 300], "y"] = np.nan  # 300 lies in the validation split [280, 360)
    df = df.drop(index=[100, 101, 102]).reset_index(drop=True)  # a gap too: inserted as NaN rows
    _, prep = load(df, missing="drop-windows")
    assert not np.isfinite(prep.scaled).all()  # the NaN are still in the series ...
    windows = torch.from_numpy(prep.scaled).unfold(0, prep.window + prep.horizon, 1)
    for idx in (prep.index.train, prep.index.val):  # ... but in no gathered training/validation window
        assert len(idx) > 0
        x, y, *_ = gather(windows, torch.from_numpy(idx), Roles(prep.window, prep.horizon, 1))
        assert torch.isfinite(x).all() and torch.isfinite(y).all()


# -- D2 gaps ----------------------------------------------------------------------------------------
def test_d2_gaps_listed_with_policy_hint():
    df = seasonal_frame(300).drop(index=[10, 11, 50]).reset_index(drop=True)
    with pytest.raises(DataError, match=r"3 missing timestamps \(gaps\) on the 'h' grid: 2024-01-01 10:00:00, "
                                        r"2024-01-01 11:00:00, 2024-01-03 02:00:00\. Set data\.missing"):
        load(df)


def test_d2_gaps_filled_by_explicit_policy():
    full = seasonal_frame(300)
    df = full.drop(index=[10, 11, 50]).reset_index(drop=True)
    series, _ = load(df, missing="interpolate")
    assert len(series.times[0]) == 300
    np.testing.assert_array_equal(series.times[0], full["time"].to_numpy(dtype="datetime64[ns]"))
    y = full["y"].to_numpy()
    assert series.values[0][10, 0] == pytest.approx(y[9] + (y[12] - y[9]) / 3, rel=1e-5)


def test_d2_gaps_in_monthly_data_are_gaps_not_an_irregular_grid():
    df = seasonal_frame(60, freq="MS").drop(index=[20, 21]).reset_index(drop=True)  # months: unequal steps
    with pytest.raises(DataError, match=r"2 missing timestamps \(gaps\) on the 'MS' grid: 2025-09-01 00:00:00, "
                                        r"2025-10-01 00:00:00"):
        load(df, window=12, horizon=3)
    series, _ = load(df, window=12, horizon=3, missing="interpolate")
    assert series.freq == "MS" and len(series.times[0]) == 60


# -- D3 duplicated timestamps ---------------------------------------------------------------------
def test_d3_duplicates_name_both_rows_and_are_never_merged():
    df = seasonal_frame(300)
    df = pd.concat([df, df.iloc[[7]]], ignore_index=True)
    with pytest.raises(DataError, match=r"1 duplicated timestamps: 2024-01-01 07:00:00 at row 7 and row 300\. "
                                        r"Each timestamp must appear once per series"):
        load(df)


def test_d3_duplicates_per_series_in_long_format(tmp_path):
    a, b = seasonal_frame(300).assign(sid="a"), seasonal_frame(300).assign(sid="b")
    df = pd.concat([a, b, b.iloc[[3]]], ignore_index=True)
    path = write_csv(df, tmp_path / "long.csv")
    with pytest.raises(DataError, match=r"duplicated timestamps in series 'b': 2024-01-01 03:00:00 at line 305 "
                                        r"and line 602"):
        load(path, id_col="sid")


def test_empty_series_id_cells_are_named():
    df = pd.concat([seasonal_frame(300).assign(sid="a"), seasonal_frame(300).assign(sid=None)], ignore_index=True)
    with pytest.raises(DataError, match=r"series id column 'sid' has 300 empty cells at row 300, row 301"):
        load(df, id_col="sid")


def test_a_named_datetime_index_is_the_time_column():
    df = seasonal_frame(300)
    series, _ = load(df.set_index("time"))
    np.testing.assert_array_equal(series.times[0], df["time"].to_numpy(dtype="datetime64[ns]"))


# -- D4 unsorted rows -----------------------------------------------------------------------------
def test_d4_unsorted_rows_sorted_stably_and_logged(caplog):
    df = seasonal_frame(300)
    shuffled = df.sample(frac=1.0, random_state=3)
    with caplog.at_level(logging.INFO, logger="lstmcast.data.validate"):
        series, _ = load(shuffled)
    ordered, _ = load(df)
    np.testing.assert_array_equal(series.times[0], ordered.times[0])
    np.testing.assert_array_equal(series.values[0], ordered.values[0])
    assert any("not in time order; sorted them by time (stable sort)" in r.message for r in caplog.records)
    assert "sorted" in series.notes[0]


# -- D5 irregular frequency -----------------------------------------------------------------------
def test_d5_irregular_steps_listed_with_freq_option():
    df = seasonal_frame(300)
    df.loc[100:, "time"] = df.loc[100:, "time"] + pd.Timedelta("7min")
    with pytest.raises(DataError, match=r"not on a regular time grid: observed steps 0 days 01:00:00 \(298x\), "
                                        r"0 days 01:07:00 \(1x\).*between row 99 and row 100\. Set data\.freq"):
        load(df)


def test_d5_freq_option_checks_the_grid_and_bad_freq_is_a_config_error():
    df = seasonal_frame(300)
    with pytest.raises(DataError, match=r"off the '2h' grid starting 2024-01-01 00:00:00: fix data\.freq"):
        load(df, freq="2h")
    series, _ = load(df, freq="h")
    assert series.freq == "h"
    with pytest.raises(ConfigError, match=r"data\.freq 'hourly' is not a pandas frequency: use e\.g\. 'h'"):
        load(df, freq="hourly")


# -- D6 text in a numeric column ------------------------------------------------------------------
def test_d6_text_cell_named_with_column_row_and_value():
    df = seasonal_frame(300)
    df["y"] = df["y"].astype(object)
    df.loc[17, "y"] = "n/a?"
    with pytest.raises(DataError, match=r"column 'y' must be numeric but holds text: 'n/a\?' at row 17"):
        load(df)


def test_d6_cli_text_cell_names_the_file_line(tmp_path):
    df = seasonal_frame(300)
    df["y"] = df["y"].round(3).astype(str)
    df.loc[41, "y"] = "12,5"  # a decimal comma
    err = cli_train_fails(tmp_path, write_csv(df, tmp_path / "d.csv", quoting=1), *CLI_ARGS)
    assert "column 'y' must be numeric but holds text: '12,5' at line 43" in err


# -- D7 timestamps ----------------------------------------------------------------------------------
def test_d7_unparseable_timestamp_names_row_and_time_format(tmp_path):
    df = seasonal_frame(300)
    df["time"] = df["time"].dt.strftime("%Y-%m-%d %H:%M")
    df.loc[27, "time"] = "2024-01-02 3 o'clock"
    with pytest.raises(DataError, match=r"1 unparseable timestamps, first \"2024-01-02 3 o'clock\" at line 29: "
                                        r"fix those rows or set data\.time_format"):
        load(write_csv(df, tmp_path / "t.csv"))


def test_d7_mixed_time_zones_refused_and_utc_option_converts():
    df = seasonal_frame(300)
    df["time"] = df["time"].dt.strftime("%Y-%m-%dT%H:%M:%S+01:00")
    df.loc[150:, "time"] = (seasonal_frame(300)["time"][150:] + pd.Timedelta("1h")).dt.strftime(
        "%Y-%m-%dT%H:%M:%S+02:00")  # the same instants, written in another zone
    with pytest.raises(DataError, match=r"mixes time zones \(\+01:00 at row 0, \+02:00 at row 150, row 151.*"
                                        r"set data\.utc: true"):
        load(df)
    series, _ = load(df, utc=True)
    assert series.tz == "UTC"
    assert series.times[0][0] == np.datetime64("2023-12-31T23:00")
    assert len(series.times[0]) == 300


def test_d7_zone_of_a_datetime_column_is_kept_across_dst():
    df = seasonal_frame(24 * 120, start="2024-02-01")
    df["time"] = df["time"].dt.tz_localize("Europe/Berlin", nonexistent="shift_forward", ambiguous="NaT")
    df = df.dropna().drop_duplicates("time")  # the spring-forward hour: a duplicate after shifting
    series, _ = load(df, missing="interpolate")
    assert series.tz == "Europe/Berlin"
    assert series.freq == "h"


# -- D8 too short -----------------------------------------------------------------------------------
def test_d8_too_short_gives_required_and_actual_lengths():
    with pytest.raises(DataError, match=r"too short: it has 40 points; validation and test take the last 20 .*"
                                        r"leaving 20 training points, but window \+ horizon = 24 \+ 6 = 30 are "
                                        r"needed.*reduce data\.window or data\.horizon"):
        load(seasonal_frame(40))


def test_d8_cli_too_short(tmp_path):
    err = cli_train_fails(tmp_path, write_csv(seasonal_frame(40), tmp_path / "short.csv"), *CLI_ARGS)
    assert "it has 40 points" in err and "window + horizon = 24 + 6 = 30" in err


# -- D9 constant column -----------------------------------------------------------------------------
def test_d9_constant_column_scaled_without_inf_and_warned(caplog):
    df = seasonal_frame(300).assign(flat=5.0)
    with caplog.at_level(logging.WARNING, logger="lstmcast.data.prepare"):
        _, prep = load(df, features=["flat"])
    assert np.isfinite(prep.scaled).all()
    np.testing.assert_array_equal(prep.scaled[:, 1], 0.0)
    assert prep.constant == ["flat"]
    assert any("constant columns" in r.message and "flat" in r.message for r in caplog.records)


# -- D10 inf and the float16 range ------------------------------------------------------------------
def test_d10_inf_refused_before_training(tmp_path):
    df = seasonal_frame(300)
    df["y"] = df["y"].astype(object)
    df.loc[4, "y"] = "-inf"
    with pytest.raises(DataError, match=r"column 'y' holds 1 infinite values at line 6: replace them"):
        load(write_csv(df, tmp_path / "inf.csv"))


def test_d10_fp16_range_checked_on_what_enters_the_model():
    big = seasonal_frame(300, trend=0.0)
    big["y"] = big["y"] * 1e5  # far beyond 65504 raw, fine once standard-scaled
    _, prep = load(big, precision="fp16")
    assert np.abs(prep.scaled).max() < 10
    with pytest.raises(DataError, match=r"column 'y' has values beyond the float16 range .* at row 0, row 1.*"
                                        r"data\.scaling is 'none' and train\.precision is fp16"):
        load(big, precision="fp16", scaling="none")
    spike = seasonal_frame(300)
    spike.loc[290, "y"] = 1e9  # a spike in the test split: huge even after scaling
    with pytest.raises(DataError, match=r"exceed the float16 range \(\|x\| > 65504\) after scaling, first in "
                                        r"column 'y' at 2024-01-13 02:00:00"):
        load(spike, precision="fp16")


# -- D11 empty file, header only, wrong delimiter ---------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("", r"is empty \(0 bytes\): expected a header line and data rows"),
    ("\n\n", r"has no header line"),
    ("time,y\n", r"has a header but no data rows"),
    ("time\n2024-01-01\n", r"has only one column 'time': expected a time column and at least one value column"),
])
def test_d11_empty_or_header_only_file(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load(path)


@pytest.mark.parametrize("sep, delimiter, hint", [
    (";", None, r"looks ';'-separated: set data\.delimiter: ';'"),
    ("\t", None, r"looks '\\t' \(tab\)-separated"),
    (",", ";", r"looks ','-separated: set data\.delimiter: ','"),
])
def test_d11_wrong_delimiter_names_the_right_one(tmp_path, sep, delimiter, hint):
    path = write_csv(seasonal_frame(50), tmp_path / "d.csv", sep=sep)
    with pytest.raises(DataError, match=r"read as one column .*" + hint):
        load(path, delimiter=delimiter)


def test_d11_cli_semicolon_file(tmp_path):
    err = cli_train_fails(tmp_path, write_csv(seasonal_frame(300), tmp_path / "semi.csv", sep=";"), *CLI_ARGS)
    assert "the file looks ';'-separated: set data.delimiter: ';' (CLI: --set data.delimiter=';')" in err


# -- D12 misspelled column --------------------------------------------------------------------------
def test_d12_misspelled_columns_listed_with_closest_match():
    df = seasonal_frame(300).assign(temperature=1.0)
    with pytest.raises(DataError, match=r"data\.target 'yy' is not a column of the DataFrame \(did you mean 'y'\?\); "
                                        r"data\.features 'temprature' .*\(did you mean 'temperature'\?\)\. "
                                        r"Columns present: 'time', 'y', 'temperature'"):
        load(df, target=["yy"], features=["temprature"])


def test_d12_cli_misspelled_time_column(tmp_path):
    path = write_csv(seasonal_frame(300).rename(columns={"time": "timestamp"}), tmp_path / "c.csv")
    err = cli_train_fails(tmp_path, path, "--time-col", "timestmap", "--target", "y", "--horizon", "6")
    assert "data.time_col 'timestmap' is not a column" in err and "(did you mean 'timestamp'?)" in err


# -- D13 new data at predict time -------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    df = seasonal_frame(300).assign(temp=np.arange(300.0))
    cfg = small_config(data={"features": ["temp"]}, train={"max_epochs": 1})
    return Forecaster(cfg).fit(df), df


def test_d13_other_columns(fitted):
    fc, df = fitted
    with pytest.raises(DataError, match=r"new data lacks columns the model was trained on: target column 'y'; "
                                        r"feature column 'temp' \(did you mean 'tmp'\?\)\. It needs the columns "
                                        r"'time' \(time\), 'y' \(target\), 'temp' \(feature\); columns present: "
                                        r"'time', 'load', 'tmp'"):
        fc.predict(df.rename(columns={"y": "load", "temp": "tmp"}))


def test_d13_too_short(fitted):
    fc, df = fitted
    with pytest.raises(DataError, match=r"new data is too short: the series has 10 rows, but forecasting needs "
                                        r"the last window = 24 contiguous rows"):
        fc.predict(df.tail(10))


def test_d13_not_contiguous_or_off_the_training_grid(fitted):
    fc, df = fitted
    gap = df.tail(60).drop(index=df.index[-20])
    with pytest.raises(DataError, match=r"new data for the trained model: the series has 1 missing timestamps"):
        fc.predict(gap)
    shifted = df.tail(60).assign(time=df["time"].tail(60) + pd.Timedelta("30min"))
    with pytest.raises(DataError, match=r"not on the training grid \('h' steps from 2024-01-01 00:00:00\)"):
        fc.predict(shifted)


def test_d13_other_frequency_and_zone(fitted):
    fc, df = fitted
    daily = seasonal_frame(100, freq="D").assign(temp=1.0)
    with pytest.raises(DataError, match=r"frequency is 'D' but the model was trained on 'h': resample"):
        fc.predict(daily)
    zoned = df.assign(time=df["time"].dt.tz_localize("UTC"))
    with pytest.raises(DataError, match=r"timestamps are in time zone 'UTC' but the training timestamps were naive"):
        fc.predict(zoned)


def test_d13_cli_predict_with_other_columns_writes_nothing(tmp_path, fitted):
    fc, df = fitted
    run = tmp_path / "run"
    fc.save(run)
    listing = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    bad = write_csv(df.drop(columns=["temp"]), tmp_path / "new.csv")
    out = tmp_path / "forecast.csv"
    res = run_cli("predict", str(run), "--data", str(bad), "--out", str(out), cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "new data lacks columns the model was trained on: feature column 'temp'" in res.stderr
    assert not out.exists()
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == listing
    assert sorted(os.listdir(tmp_path)) == ["new.csv", "run"]
