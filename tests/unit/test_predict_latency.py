"""The one-series predict fast path (issue 22: <= 1.5 ms p50 for every regular frequency, calendar channels
included) gives what the general path and a forward by hand give, refuses what it refused before inside the
window, and runs a few windows on one torch thread without changing the process's thread count."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from lstmcast import Forecaster
from lstmcast.data import scaling
from lstmcast.data.calendar import calendar_features
from lstmcast.inference import fastpath
from lstmcast.inference.fastpath import fast_series
from lstmcast.inference.predict import _predict_scaled, forecast_frame, load_new_series
from tests.conftest import small_config

# every regular step the fast path takes, each with calendar channels that vary at that step
CALENDARS = {"30min": ["hour_of_day", "day_of_week"], "h": "auto", "D": ["day_of_week", "day_of_month"],
             "W-SUN": ["week_of_year", "month_of_year"], "MS": ["month_of_year", "quarter_of_year"]}


def _frame(freq: str, n: int) -> pd.DataFrame:
    t = np.arange(n)
    start = "2003-12-07" if freq == "W-SUN" else "2000-01-01"  # weeks crossing ISO week 53 of 2004
    return pd.DataFrame({"time": pd.date_range(start, periods=n, freq=freq), "y": 10 + np.sin(t / 2.0) + t / 50})


@pytest.fixture(scope="module", params=list(CALENDARS))
def fitted(request) -> tuple[Forecaster, pd.DataFrame]:
    freq = request.param
    df = _frame(freq, 90)
    cfg = small_config(data={"window": 8, "horizon": 3, "season": 4, "calendar": CALENDARS[freq]},
                       train={"max_epochs": 1})
    return Forecaster(cfg).fit(df.iloc[:70]), df


def _by_hand(fc: Forecaster, recent: pd.DataFrame) -> np.ndarray:
    """The model's forward on the last window, its calendar channels from pandas' own stamps."""
    meta = fc.meta_
    L, H, names = meta.window, meta.horizon, meta.inputs.calendar
    mean, std = fc.scaler_["mean"][0], fc.scaler_["std"][0]
    x = scaling.transform(recent["y"].to_numpy(np.float32)[-L:, None], mean, std)
    past = recent["time"].to_numpy("datetime64[ns]")[-L:]
    ahead = pd.date_range(recent["time"].iloc[-1], periods=H + 1, freq=meta.freq)[1:].as_unit("ns").to_numpy()
    xin = torch.from_numpy(np.concatenate([x, calendar_features(past, names)], axis=1)[None])
    with torch.no_grad():
        raw = fc.model_(xin, future=torch.from_numpy(calendar_features(ahead, names)[None])).numpy()
    return raw[0, :, 0] * std[0] + mean[0]


def test_fast_predict_with_calendar_equals_the_general_path_and_a_forward_by_hand(fitted):
    fc, df = fitted
    assert fc.meta_.inputs.calendar  # the calendar channels are on: the comparison covers them
    recent = df.iloc[-30:].reset_index(drop=True)
    assert fast_series(recent, fc.meta_) is not None  # the fast path is taken
    fast = fc.predict(recent)
    general = forecast_frame(fc.model_, load_new_series(recent, fc.config_, fc.meta_), fc.meta_, fc.scaler_)
    pd.testing.assert_frame_equal(fast, general)
    ahead = pd.date_range(recent["time"].iloc[-1], periods=fc.meta_.horizon + 1, freq=fc.meta_.freq)[1:]
    assert list(fast["time"]) == list(ahead)
    np.testing.assert_allclose(fast["y"].to_numpy(), _by_hand(fc, recent), rtol=1e-6, atol=1e-6)


def test_a_bad_value_or_stamp_inside_the_window_is_refused_as_before(fitted):
    """The fast path checks the whole frame, the last window included: each edit sends it to the general
    path, which refuses with its own message."""
    fc, df = fitted
    recent = df.iloc[-30:].reset_index(drop=True)
    last = len(recent) - 2  # inside the last window
    nan = recent.assign(y=recent["y"].where(recent.index != last))
    inf = recent.assign(y=recent["y"].mask(recent.index == last, np.inf))
    gap = recent.drop(index=last).reset_index(drop=True)
    off = recent.assign(time=recent["time"].mask(recent.index == last, recent["time"] + pd.Timedelta(hours=1)))
    for bad, message in ((nan, "missing values"), (inf, "infinite"), (gap, "gap"), (off, "grid|duplicated")):
        assert fast_series(bad, fc.meta_) is None
        with pytest.raises(ValueError, match=message) as fast_error:
            fc.predict(bad)
        with pytest.raises(ValueError) as general_error:
            forecast_frame(fc.model_, load_new_series(bad, fc.config_, fc.meta_), fc.meta_, fc.scaler_)
        assert str(fast_error.value) == str(general_error.value)


def test_the_output_frame_without_pandas_private_constructor_is_the_same(fitted, monkeypatch):
    fc, df = fitted
    recent = df.iloc[-30:].reset_index(drop=True)
    out = fc.predict(recent)
    monkeypatch.delattr(pd.DataFrame, "_from_arrays")
    pd.testing.assert_frame_equal(fc.predict(recent), out)
    out.columns.name = "mine"  # a user's edit of one result's labels does not reach the next result
    assert fc.predict(recent).columns.name is None


class _Threads(torch.nn.Module):
    """Records the torch thread count each forward runs on."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(torch.get_num_threads())
        return x[:, -2:, :1]


def test_a_few_windows_run_on_one_thread_and_the_thread_count_comes_back():
    before = torch.get_num_threads()
    model = _Threads()
    try:
        torch.set_num_threads(2)
        _predict_scaled(model, np.zeros((1, 5, 2), dtype=np.float32))
        _predict_scaled(model, np.zeros((fastpath.FEW_WINDOWS + 1, 5, 2), dtype=np.float32))
        assert model.seen == [1, 2] and torch.get_num_threads() == 2
        # torch's count is per thread: a predict on another thread runs on one and leaves both counts alone
        counts: dict[str, int] = {}

        def other():
            torch.set_num_threads(3)
            _predict_scaled(model, np.zeros((1, 5, 2), dtype=np.float32))
            counts["after"] = torch.get_num_threads()
        worker = threading.Thread(target=other)
        worker.start()
        worker.join(30)
        assert model.seen[-1] == 1 and counts["after"] == 3 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
