"""Hostile data that used to give wrong results without a word (FAULTS.md D14, D15, D16, H13).

D14 values finite in float64 but not in float32 (before and after scaling), at training and predict time;
D15 timestamps outside pandas' nanosecond range, and forecasts that would run past it;
D16 duplicated column names and ids that type-guessing would merge or blank;
H13 daily data in a time zone across DST; plus the file-level errors of issue item 14.
The fast path = general path property (H11) is in test_fastpath_property.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster
from lstmcast.config import validate_config
from lstmcast.data.io import read_table
from lstmcast.data.prepare import prepare
from lstmcast.data.validate import validate_frame
from lstmcast.errors import DataError, did_you_mean
from lstmcast.inference.fastpath import future_times
from tests.conftest import run_cli, seasonal_frame, small_config
from tests.faults.test_data_faults import CLI_ARGS, cli_train_fails


def load(source, **data):
    """What Forecaster.fit does before training (read with the id column, validate, prepare)."""
    cfg = validate_config(small_config(data=data))
    series = validate_frame(read_table(source, cfg.data.delimiter, cfg.data.id_col), cfg.data)
    return series, prepare(series, cfg.data)


@pytest.fixture(scope="module")
def fitted() -> Forecaster:
    return Forecaster(small_config()).fit(seasonal_frame(300))


def tail_frame(n: int = 40) -> pd.DataFrame:
    """New data continuing the training grid of ``fitted`` (hourly from 2024-01-01)."""
    return seasonal_frame(340).iloc[-n:].reset_index(drop=True)


# -- D14 beyond float32 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("big", [1e39, 1e308, -3.5e38])
def test_d14_values_beyond_float32_refused_naming_column_and_rows(big):
    df = seasonal_frame(300)
    df.loc[[10, 20], "y"] = big
    with pytest.raises(DataError, match=r"column 'y' holds 2 values beyond the float32 range .* at row 10, "
                                        r"row 20.*rescale the column"):
        load(df)


def test_d14_python_int_beyond_float64_is_a_data_error_not_a_crash():
    """An object column holding 10**400 (a Python int no float holds) made pandas raise OverflowError: exit 1."""
    df = seasonal_frame(300)
    df["y"] = df["y"].astype(object)
    df.loc[12, "y"] = 10**400
    with pytest.raises(DataError, match=r"column 'y' holds 1 integers beyond the float range at row 12.*rescale"):
        load(df)


def test_d14_overflow_after_scaling_refused_naming_column_and_time():
    df = seasonal_frame(300)
    df["y"] = df["y"] * 1e-10  # training std ~1e-10: a finite 3e38 scales to ~1e48, inf in float32
    df.loc[290, "y"] = 3e38
    with pytest.raises(DataError, match=r"1 values of the series overflow float32 after scaling, first in "
                                        r"column 'y' at 2024-01-13 02:00:00"):
        load(df, scaling="standard")


def test_d14_cli_train_exits_3_on_values_beyond_float32(tmp_path: Path):
    df = seasonal_frame(300)
    df.loc[7, "y"] = 1e39
    data = tmp_path / "d.csv"
    df.to_csv(data, index=False)
    assert "column 'y' holds 1 values beyond the float32 range" in cli_train_fails(tmp_path, data, *CLI_ARGS)


def test_d14_predict_refuses_values_beyond_float32_on_both_paths(fitted, tmp_path: Path):
    new = tail_frame()
    new.loc[len(new) - 3, "y"] = 1e39
    with pytest.raises(DataError, match=r"column 'y' holds 1 values beyond the float32 range"):
        fitted.predict(new)  # a DataFrame: fast path first
    new.to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(DataError, match=r"beyond the float32 range \(\|x\| > 3.4e38\) at line 39"):
        fitted.predict(tmp_path / "new.csv")


def test_d14_predict_refuses_overflow_after_scaling():
    df = seasonal_frame(300)
    df["y"] = df["y"] * 1e-10
    fc = Forecaster(small_config(train={"max_epochs": 1})).fit(df)
    new = df.iloc[-30:].reset_index(drop=True)
    new.loc[len(new) - 1, "y"] = 3e38
    with pytest.raises(DataError, match=r"overflow float32 after scaling, first in column 'y' at "
                                        r"2024-01-13 11:00:00"):
        fc.predict(new)


# -- D15 timestamps outside the nanosecond range --------------------------------------------------------
def test_d15_csv_from_1500_refused_with_the_range_not_wrapped_to_2084(tmp_path: Path):
    path = tmp_path / "old.csv"
    seasonal_frame(300, freq="D", start="1500-01-01").to_csv(path, index=False)
    with pytest.raises(DataError, match=r"time column 'time' has 300 timestamps outside the supported range "
                                        r"1677-09-22 to 2262-04-11 .*first 1500-01-01T00:00:00 at line 2"):
        load(path)


def test_d15_dataframe_in_seconds_after_2262_refused():
    df = seasonal_frame(300, freq="D", start="2262-01-01")
    df["time"] = pd.date_range("2262-01-01", periods=300, freq="D", unit="s")
    with pytest.raises(DataError, match=r"(?s)timestamps outside the supported range.*first 2262-04-12"):
        load(df)


@pytest.mark.parametrize("freq", ["h", "D", "MS"])
def test_d15_future_timestamps_past_2262_refused_not_wrapped(freq):
    with pytest.raises(DataError, match=r"forecast timestamps after 2262-0.* run past 2262-04-11 23:47:16"):
        future_times(np.datetime64("2262-01-01T00:00", "ns") if freq == "MS" else
                     np.datetime64("2262-04-10T00:00", "ns"), 96, freq)
    assert len(future_times(np.datetime64("2262-04-01T00:00", "ns"), 24, "h")) == 24


def test_d15_predict_past_2262_refused():
    end = pd.Timestamp("2262-04-08")
    df = seasonal_frame(300, period=7, freq="D", start=str((end - pd.Timedelta(days=299)).date()))
    cfg = small_config(data={"season": 7}, train={"max_epochs": 1})
    with pytest.raises(DataError, match=r"run past 2262-04-11"):  # R13: refused before training, not after
        Forecaster(cfg).fit(df)
    fc = Forecaster(cfg).fit(df.iloc[:-10])  # ends 2262-03-29: its forecast fits
    with pytest.raises(DataError, match=r"run past 2262-04-11"):  # new data ending later: refused at predict
        fc.predict(df)


# -- D16 duplicated columns, ids as text ------------------------------------------------------------------
def test_d16_duplicated_csv_header_refused_naming_the_column(tmp_path: Path):
    path = tmp_path / "dup.csv"
    path.write_text("time,y,y\n" + "".join(f"2024-01-01 {h:02d}:00,{h},{-h}\n" for h in range(24)))
    with pytest.raises(DataError, match=r"dup.csv has duplicated column names 'y': each column needs a unique"):
        load(path)


def test_d16_duplicated_parquet_columns_refused_without_rename_to_csv(tmp_path: Path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "dup.parquet"
    times = pa.array(pd.date_range("2024-01-01", periods=30, freq="h"))
    pq.write_table(pa.table([times, pa.array(range(30)), pa.array(range(30))], names=["time", "y", "y"]), path)
    with pytest.raises(DataError, match=r"duplicated column names 'y'") as err:
        load(path)
    assert ".csv" not in str(err.value).replace("dup.parquet", "")


def test_d16_duplicated_dataframe_columns_refused():
    df = seasonal_frame(100)
    df = pd.concat([df, df[["y"]]], axis=1)
    with pytest.raises(DataError, match=r"the DataFrame has duplicated column names 'y'"):
        load(df)


def _long_csv(path: Path, ids: list[str], na_at: int | None = None) -> Path:
    lines = [f"{i},2024-01-01 {h:02d}:00,{'NA' if h == na_at else h}" for i in ids for h in range(24)]
    path.write_text("id,time,y\n" + "\n".join(lines) + "\n")
    return path


def test_d16_ids_read_as_text_exactly_as_written(tmp_path: Path):
    series, _ = load(_long_csv(tmp_path / "ids.csv", ["01", "1", "NA", "1.0"]), id_col="id", window=4,
                     horizon=2, season=None)
    assert series.ids == ["01", "1", "1.0", "NA"]  # before: 01/1/1.0 merged, NA became an empty id


def test_d16_na_still_means_missing_in_value_columns_and_blank_id_refused(tmp_path: Path):
    with pytest.raises(DataError, match=r"column 'y': 1 empty cells, first at line 7"):
        load(_long_csv(tmp_path / "na.csv", ["a", "b"], na_at=5), id_col="id", window=4, horizon=2, season=None)
    with pytest.raises(DataError, match=r"series id column 'id' has 24 empty cells at line 26"):
        load(_long_csv(tmp_path / "blank.csv", ["a", ""]), id_col="id", window=4, horizon=2, season=None)


# -- H13 daily data in a time zone across DST --------------------------------------------------------------
def _berlin_daily(n: int = 200) -> pd.DataFrame:
    df = seasonal_frame(n, period=7, freq="D", start="2024-01-10")
    df["time"] = pd.date_range("2024-01-10", periods=n, freq="D", tz="Europe/Berlin")
    return df


@pytest.mark.parametrize("freq", [None, "D"])
def test_h13_zoned_daily_data_across_dst_is_on_calendar_days(freq):
    series, _ = load(_berlin_daily(), window=14, horizon=3, season=7, freq=freq)
    assert series.freq == "D" and series.tz == "Europe/Berlin"


def test_h13_gap_across_dst_filled_at_local_midnight():
    df = _berlin_daily().drop(index=[79, 80, 81])  # 2024-03-30 .. 2024-04-01 (DST starts 03-31)
    with pytest.raises(DataError, match=r"3 missing timestamps .*2024-03-30 00:00:00, 2024-03-31 00:00:00"):
        load(df, window=14, horizon=3, season=7)
    series, _ = load(df, window=14, horizon=3, season=7, missing="interpolate")
    local = pd.DatetimeIndex(series.times[0]).tz_localize("UTC").tz_convert("Europe/Berlin")
    assert (local.hour == 0).all() and len(local) == 200


def test_h13_zoned_daily_forecast_stays_at_local_midnight_across_dst():
    df = _berlin_daily()
    fc = Forecaster(small_config(data={"window": 14, "horizon": 3, "season": 7}, train={"max_epochs": 1}))
    fc.fit(df.iloc[:78])  # ends 2024-03-27: the forecast crosses the DST switch of 2024-03-31
    out = fc.predict(df.iloc[:82])
    assert [str(t) for t in out["time"]] == ["2024-04-01 00:00:00+02:00", "2024-04-02 00:00:00+02:00",
                                             "2024-04-03 00:00:00+02:00"]


# -- item 14: messages and files ----------------------------------------------------------------------------
def test_did_you_mean_ignores_case():
    assert did_you_mean("sunactivity", ["YEAR", "SUNACTIVITY"]) == " (did you mean 'SUNACTIVITY'?)"
    with pytest.raises(DataError, match=r"data.target 'Y' is not a column of the DataFrame \(did you mean 'y'"):
        load(seasonal_frame(100), target="Y")


def test_numeric_time_column_message_has_no_numpy_repr():
    df = seasonal_frame(100)
    df["time"] = np.arange(1700, 1800) + 0.5  # integers are integer time (issue 12); decimals are refused
    with pytest.raises(DataError, match=r"holds decimal numbers, not timestamps or integer steps \(first 1700.5\)") \
            as err:
        load(df)
    assert "np." not in str(err.value)


def test_dev_zero_is_not_a_regular_file():
    with pytest.raises(DataError, match=r"/dev/zero is not a regular file"):
        load("/dev/zero")


def test_unreadable_file_is_a_data_error_naming_file_and_reason(tmp_path: Path, monkeypatch):
    path = tmp_path / "locked.csv"
    seasonal_frame(100).to_csv(path, index=False)

    def denied(*args, **kwargs):  # tests may run as root, where chmod 000 does not deny reading
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pd, "read_csv", denied)
    with pytest.raises(DataError, match=r"locked.csv' cannot be read \(Permission denied\)") as err:
        load(path)
    assert err.value.exit_code == 3


def test_5000_character_path_gives_a_clear_error(tmp_path: Path):
    long_path = "a" * 5000 + ".csv"
    with pytest.raises(DataError, match=r"a path of 5004 characters\)' cannot be opened \(File name too long\)"):
        load(long_path)
    res = run_cli("train", "--data", long_path, *CLI_ARGS, "--run", str(tmp_path / "run"), cwd=tmp_path)
    assert res.returncode == 3 and "File name too long" in res.stderr and "Traceback" not in res.stderr
