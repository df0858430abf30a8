"""Input formats: long (id column) and wide (one column per series) agree; several targets; Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster, load
from tests.conftest import seasonal_frame, small_config

TRAIN = {"max_epochs": 2, "threads": 1}


def fit(df_or_path, **data) -> Forecaster:
    return Forecaster(small_config(data=data, train=TRAIN)).fit(df_or_path)


@pytest.fixture(scope="module")
def two_series() -> pd.DataFrame:
    """Wide table: time, a, b (b has another level, amplitude and phase)."""
    a = seasonal_frame(300, seed=1)
    b = seasonal_frame(300, seed=2, trend=0.01)
    return pd.DataFrame({"time": a["time"], "a": a["y"], "b": 3 * b["y"][::-1].to_numpy() + 5})


def to_long(wide: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"sid": s, "time": wide["time"], "y": wide[s]}) for s in ids], ignore_index=True)


def test_one_series_long_wide_and_plain_give_the_same_result(two_series):
    plain = fit(two_series[["time", "a"]].rename(columns={"a": "y"}))
    wide = fit(two_series[["time", "a"]], format="wide", target=["a"])
    long = fit(to_long(two_series, ["a"]), id_col="sid")
    p_plain, p_wide, p_long = plain.predict(), wide.predict(), long.predict()
    assert list(p_wide.columns) == ["time", "a"] and list(p_long.columns) == ["sid", "time", "y"]
    np.testing.assert_allclose(p_wide["a"], p_plain["y"], rtol=1e-6)
    np.testing.assert_allclose(p_long["y"], p_plain["y"], rtol=1e-6)
    np.testing.assert_array_equal(p_long["time"], p_plain["time"])
    assert (p_long["sid"] == "a").all()
    ref = plain.backtest()
    for other in (wide.backtest(), long.backtest()):
        for method in ("model", "naive", "seasonal_naive"):
            assert other[method] == pytest.approx(ref[method], rel=1e-6)


def test_two_series_long_and_wide_agree_per_series(two_series):
    wide = fit(two_series, format="wide", target=[])  # no target: every value column is a series
    long = fit(to_long(two_series, ["a", "b"]), id_col="sid")
    assert wide.meta_.ids == ["a", "b"] and long.meta_.ids == ["a", "b"]
    p_wide, p_long = wide.predict(), long.predict()
    assert list(p_wide.columns) == ["time", "a", "b"] and len(p_wide) == 6
    for sid in ("a", "b"):
        np.testing.assert_allclose(p_long.loc[p_long["sid"] == sid, "y"], p_wide[sid], rtol=1e-6)
    # each series is forecast in its own units: b lives around 3 * 10 + 5
    assert p_wide["a"].between(5, 15).all() and p_wide["b"].between(20, 50).all()
    assert wide.backtest()["model"] == pytest.approx(long.backtest()["model"], rel=1e-6)


def test_several_targets_are_forecast_together(two_series):
    fc = fit(two_series, target=["a", "b"])
    assert fc.meta_.n_targets == 2 and fc.model_.n_targets == 2
    out = fc.predict()
    assert list(out.columns) == ["time", "a", "b"] and len(out) == 6
    assert np.isfinite(out[["a", "b"]].to_numpy()).all()
    assert out["b"].mean() > out["a"].mean() + 10  # each target back in its own units
    metrics = fc.backtest()
    assert fc.backtest_.actual.shape[1:] == (6, 2)
    assert fc.backtest_.forecasts["model"].shape == fc.backtest_.actual.shape
    assert set(metrics) == {"model", "naive", "seasonal_naive"}


def test_parquet_input_equals_csv_input(tmp_path, two_series):
    long = to_long(two_series, ["a", "b"])
    long.to_csv(tmp_path / "s.csv", index=False)
    long.to_parquet(tmp_path / "s.parquet")
    from_csv = fit(str(tmp_path / "s.csv"), id_col="sid")
    from_parquet = fit(str(tmp_path / "s.parquet"), id_col="sid")
    pd.testing.assert_frame_equal(from_parquet.predict(), from_csv.predict())
    # new data at predict time may come as Parquet too, and a saved run predicts the same
    run = tmp_path / "run"
    from_parquet.save(run)
    again = load(run).predict(str(tmp_path / "s.parquet"))
    pd.testing.assert_frame_equal(again, from_parquet.predict(), rtol=1e-6)


def test_parquet_errors_name_the_row(tmp_path):
    df = seasonal_frame(300)
    df.loc[5, "y"] = np.nan
    df.to_parquet(tmp_path / "nan.parquet")
    from lstmcast.errors import DataError

    with pytest.raises(DataError, match=r"column 'y': 1 empty cells, first at row 5"):
        fit(str(tmp_path / "nan.parquet"))
