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


def test_horizon_times_are_computed_per_distinct_end_and_match_each_series():
    """The calendar and known-future inputs of the horizon: one date_range per distinct last time (a range
    per series cost 15x the forward at 10k series), still each series' own times, in the data's zone."""
    from lstmcast.data.calendar import future_times
    from lstmcast.inference.predict import _future_inputs

    ends = [200, 180, 200, 193, 180]
    frame = pd.concat([seasonal_frame(n, seed=i, freq="D").assign(id=f"s{i}") for i, n in enumerate(ends)],
                      ignore_index=True)
    frame["time"] = frame["time"].dt.tz_localize("Europe/Berlin")
    cfg = small_config(data={"id_col": "id"}, train={"max_epochs": 1})
    fc = Forecaster(cfg).fit(frame)
    series, meta = fc.prepared_.series, fc.meta_
    _, times = _future_inputs(series, meta, None, cfg)
    assert times.shape == (len(ends), meta.horizon)
    for i, t in enumerate(series.times):
        assert np.array_equal(times[i], future_times(t[-1], meta.freq, meta.horizon, integer_time=False, tz=meta.tz))
    assert not np.array_equal(times[0], times[1]) and np.array_equal(times[1], times[4])
