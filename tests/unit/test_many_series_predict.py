"""predict builds one frame for all series (issue 14: a frame per series cost ~70x the model's forward);
each series still gets its own future timestamps, in its zone, after its own last row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lstmcast import Forecaster
from tests.conftest import seasonal_frame, small_config


def test_long_predict_gives_each_series_its_own_future_in_order():
    a = seasonal_frame(200, seed=0, freq="D").assign(id="a")
    b = seasonal_frame(180, seed=1, freq="D").assign(id="b")  # ends 20 days earlier
    c = seasonal_frame(200, seed=2, freq="D").assign(id="c", y=lambda d: d.y * 100)
    frame = pd.concat([a, b, c], ignore_index=True)
    cfg = small_config(data={"id_col": "id", "utc": True}, train={"max_epochs": 1})
    fc = Forecaster(cfg).fit(frame)
    out = fc.predict()
    H = 6
    assert list(out.columns) == ["id", "time", "y"] and len(out) == 3 * H
    assert list(out["id"]) == ["a"] * H + ["b"] * H + ["c"] * H
    for sid, part in (("a", a), ("b", b), ("c", c)):
        got = pd.DatetimeIndex(out.loc[out["id"] == sid, "time"])
        last = pd.Timestamp(part["time"].iloc[-1])
        expected = pd.date_range(last, periods=H + 1, freq="D")[1:]
        assert list(got.tz_localize(None) if got.tz else got) == list(expected)
    assert out.loc[out["id"] == "c", "y"].mean() > 50 * out.loc[out["id"] == "a", "y"].mean()
    assert np.isfinite(out["y"]).all()
