"""fit(pd.Series) with a DatetimeIndex works as fit of the same two-column DataFrame (issue 22: a raw TypeError)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster
from lstmcast.errors import DataError
from tests.conftest import seasonal_frame, small_config


def _config(**data):
    cfg = small_config(data=data, train={"max_epochs": 1})
    for key in ("time_col", "target"):
        if key not in data:
            cfg["data"].pop(key)
    return cfg


def test_fit_and_predict_a_series_with_a_datetime_index():
    df = seasonal_frame(200)
    s = df.set_index("time")["y"]
    fc = Forecaster(_config()).fit(s)
    assert (fc.meta_.time_col, fc.meta_.targets) == ("time", ["y"])  # the index's and the Series' names
    out = fc.predict(s.iloc[-60:])
    ref = Forecaster(_config(time_col="time", target="y")).fit(df)
    pd.testing.assert_frame_equal(out, ref.predict(df.iloc[-60:]))


def test_unnamed_series_gets_default_column_names():
    s = pd.Series(seasonal_frame(200)["y"].to_numpy(), index=pd.date_range("2024-01-01", periods=200, freq="h"))
    fc = Forecaster(_config()).fit(s)
    assert (fc.meta_.time_col, fc.meta_.targets) == ("time", ["y"])
    assert list(fc.predict().columns) == ["time", "y"]


def test_series_without_datetime_index_says_how():
    with pytest.raises(DataError, match=r"a pandas Series needs its timestamps as a DatetimeIndex, got a RangeIndex: "
                                        r"set one \(s\.index = pd\.to_datetime\(dates\)\)"):
        Forecaster(_config()).fit(pd.Series(np.arange(100.0)))
