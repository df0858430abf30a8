"""Issue 24: the carried state. Chunked forwards equal one forward; streaming updates equal a fresh run; the
state files are atomic and checked."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lstmcast import Forecaster
from lstmcast.config import validate_config
from lstmcast.errors import CheckpointError, ConfigError, DataError, ShapeError
from lstmcast.model.network import LSTMForecaster
from tests.conftest import small_config

N = 60  # rows per series in the full table; the model is fitted on the first FIT of each
FIT = 48


def _table(ids: tuple[str, ...] = ("a", "b"), n: int = N) -> pd.DataFrame:
    frames = [pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="h"), "id": s,
                            "y": 5 + np.sin(np.arange(n) / 3 + k) + 0.1 * np.cos(np.arange(n) * (k + 1))})
              for k, s in enumerate(ids)]
    return pd.concat(frames, ignore_index=True)


def _rows(frame: pd.DataFrame, a: int, b: int, ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    pos = frame.groupby("id").cumcount()
    keep = (pos >= a) & (pos < b)
    if ids is not None:
        keep &= frame["id"].isin(ids)
    return frame[keep].reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted() -> Forecaster:
    cfg = small_config(data={"id_col": "id", "window": 12, "horizon": 3, "season": None},
                       model={"stateful": True, "hidden_size": 8, "num_layers": 2, "residual": True},
                       train={"max_epochs": 1, "max_steps_per_epoch": 2, "precision": "fp32", "accel": "eager",
                              "tbptt_steps": 8})
    return Forecaster(cfg).fit(_rows(_table(), 0, FIT), progress=False)


def _fresh(fc: Forecaster) -> Forecaster:
    """A copy of the fitted forecaster whose carried states start again from the training data's."""
    import copy

    out = copy.copy(fc)
    out.states_ = None
    return out


def _same(a, b, ids=None) -> None:
    pa, pb = a.position(), b.position()
    for s in ids or a.ids:
        for key in ("h", "c", "out"):
            assert torch.equal(getattr(a, key)[pa[s]], getattr(b, key)[pb[s]]), (s, key)
        assert a.last_time[pa[s]] == b.last_time[pb[s]]


# -- A: the model ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("residual", [False, True])
def test_chunked_forwards_equal_one_long_forward(residual):
    torch.manual_seed(0)
    m = LSTMForecaster(3, 1, 4, hidden_size=8, num_layers=2, residual=residual, window_norm="none").eval()
    x = torch.randn(5, 30, 3)
    out, (h, c) = m.encode(x)
    state, outs = None, []
    for a, b in ((0, 7), (7, 8), (8, 30)):  # uneven chunks, one of a single step
        o, state = m.encode(x[:, a:b], state)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state[0], h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state[1], c, rtol=1e-5, atol=1e-5)
    assert h.shape == (2, 5, 8)  # (num_layers * D, B, hidden) per the guide
    # the head from the last output is the window forward's forecast
    torch.testing.assert_close(m.forecast_from(out[:, -1]), m(x), rtol=1e-5, atol=1e-5)


def test_a_model_that_needs_its_window_refuses_to_carry_state():
    with pytest.raises(ShapeError, match="window_norm='mean'"):
        LSTMForecaster(3, 1, 4, hidden_size=8).encode(torch.zeros(1, 2, 3))
    with pytest.raises(ShapeError, match="bidirectional"):
        LSTMForecaster(3, 1, 4, hidden_size=8, bidirectional=True, window_norm="none").encode(torch.zeros(1, 2, 3))


def test_stateful_config_defaults_and_refusals():
    m = validate_config({"model": {"stateful": True}}).model
    assert (m.window_norm, m.linear_skip) == ("none", False)
    assert validate_config({}).model.window_norm == "mean"  # window models unchanged
    with pytest.raises(ConfigError, match="bidirectional") as err:
        validate_config({"model": {"stateful": True, "bidirectional": True, "linear_skip": True}})
    assert err.value.exit_code == 2 and "linear_skip" in str(err.value)
    with pytest.raises(ConfigError, match="static"):
        validate_config({"model": {"stateful": True}, "data": {"static_features": ["r"], "id_col": "id"}})


# -- B: streaming updates -----------------------------------------------------------------------------------
def test_k_updates_of_one_row_equal_one_update_of_k_rows(fitted):
    full = _table()
    one, many = _fresh(fitted), _fresh(fitted)
    for k in range(FIT, FIT + 4):
        s = one.update(_rows(full, k, k + 1))
        assert (s.series_updated, s.rows_applied) == (2, 2)
    s = many.update(_rows(full, FIT, FIT + 4))
    assert (s.series_updated, s.rows_applied, s.rows_ignored, s.new_series) == (2, 8, 0, [])
    a, b = one.carried_states(), many.carried_states()
    for key in ("h", "c", "out"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), rtol=1e-5, atol=1e-6)
    assert a.rows.tolist() == b.rows.tolist() == [FIT + 4] * 2


def test_predict_after_updates_equals_a_fresh_run_and_never_changes_the_state(fitted):
    full = _table()
    fc = _fresh(fitted)
    fc.update(_rows(full, FIT, FIT + 5))
    before = fc.carried_states().copy()
    streamed = fc.predict()
    _same(before, fc.carried_states())  # predict reads the state only
    fresh = fc.predict(_rows(full, 0, FIT + 5))  # a fresh stateful run over the whole history
    pd.testing.assert_frame_equal(streamed, fresh, rtol=1e-5, atol=1e-5)
    assert streamed["time"].min() == full["time"].iloc[FIT + 5]  # the forecast starts after the last update
    _same(before, fc.carried_states())


def test_an_update_of_one_series_leaves_the_other_bit_for_bit_and_repeats_as_a_no_op(fitted):
    full = _table()
    fc = _fresh(fitted)
    before = fc.carried_states().copy()
    fc.update(_rows(full, FIT, FIT + 3, ids=("a",)))
    after = fc.carried_states()
    _same(before, after, ids=["b"])
    assert not torch.equal(before.h[0], after.h[0])
    again = fc.update(_rows(full, 0, FIT + 3, ids=("a",)))  # old rows and the same new rows: nothing to do
    assert (again.series_updated, again.rows_applied, again.rows_ignored) == (0, 0, FIT + 3)
    _same(after, fc.carried_states())


def test_a_gap_a_non_finite_or_an_out_of_order_row_is_refused_and_nothing_applied(fitted):
    full = _table()
    fc = _fresh(fitted)
    before = fc.carried_states().copy()
    gap = pd.concat([_rows(full, FIT, FIT + 1, ("a",)), _rows(full, FIT + 2, FIT + 3, ("b",))])
    with pytest.raises(DataError, match=r"series 'b'.*2024-01-03T02:00:00.*gap") as err:
        fc.update(gap)
    assert err.value.exit_code == 3
    nan = _rows(full, FIT, FIT + 2)
    nan.loc[1, "y"] = np.nan
    with pytest.raises(DataError, match="nothing applied"):
        fc.update(nan)
    back = _rows(full, FIT, FIT + 3, ("a",)).iloc[[0, 2, 1]]
    with pytest.raises(DataError, match=r"out of time order.*series 'a' row"):
        fc.update(back)
    _same(before, fc.carried_states())


def test_an_unseen_series_starts_from_zero_with_a_burn_in(fitted):
    fc = _fresh(fitted)
    new = _table(ids=("z",), n=20)
    s = fc.update(new)
    assert s.new_series == ["z"] and s.rows_applied == 20
    from lstmcast.inference.stateful import burn_in

    ref = burn_in(fc.model_, fc.series(new), fc.meta_, fc.scaler_)
    _same(ref, fc.carried_states(), ids=["z"])


def test_a_window_model_has_no_update(seasonal_df):
    fc = Forecaster(small_config(train={"max_epochs": 1, "max_steps_per_epoch": 1})).fit(seasonal_df.iloc[:200],
                                                                                       progress=False)
    with pytest.raises(ConfigError, match="model.stateful: true"):
        fc.update(seasonal_df.iloc[200:201])


# -- B: the state files ---------------------------------------------------------------------------------------
def test_save_load_update_equals_update_in_memory_and_a_tampered_state_is_refused(fitted, tmp_path):
    from lstmcast import load

    full = _table()
    mem = _fresh(fitted)
    mem.update(_rows(full, FIT, FIT + 3))
    fitted_copy = _fresh(fitted)
    fitted_copy.save(tmp_path / "run", outputs=False)
    disk = load(tmp_path / "run")
    disk.update(_rows(full, FIT, FIT + 3))  # written back to the folder
    again = load(tmp_path / "run")
    _same(mem.carried_states(), again.carried_states())
    pd.testing.assert_frame_equal(mem.predict(), again.predict())
    files = sorted(p.name for p in (tmp_path / "run").glob("state-*.safetensors"))
    assert files == ["state-000002.safetensors"]  # the old generation removed
    # kill -9 after the new state file but before state.json: the previous state stays the one read
    (tmp_path / "run" / "state-000003.safetensors").write_bytes(b"partial")
    _same(mem.carried_states(), load(tmp_path / "run").carried_states())
    blob = bytearray((tmp_path / "run" / files[0]).read_bytes())
    blob[-5] ^= 1
    (tmp_path / "run" / files[0]).write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="state-000002.safetensors.*sha256") as err:
        load(tmp_path / "run").predict()
    assert err.value.exit_code == 4
    rec = json.loads((tmp_path / "run" / "state.json").read_text())
    other = dict(rec, model_sha256="0" * 64)  # a state left from a model since retrained
    (tmp_path / "run" / "state.json").write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match="another model.safetensors"):
        load(tmp_path / "run").predict()
    rec["file"] = "../model.safetensors"
    (tmp_path / "run" / "state.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match="state.json"):
        load(tmp_path / "run").update(_rows(full, FIT + 3, FIT + 4))


def test_a_stateful_backtest_forecasts_each_origin_from_the_carried_state(fitted):
    full = _table()
    fc = _fresh(fitted)
    fc.backtest(full)
    bt = fc.backtest_
    k = len(bt.origins) // 2
    sid, origin = fc.series(full).ids[bt.series_idx[k]], int(bt.origins[k])
    ref = fc.predict(_rows(full, 0, origin, ids=(sid,)))  # a fresh run over the rows before that origin
    np.testing.assert_allclose(bt.forecasts["model"][k][:, 0], ref["y"].to_numpy(), rtol=1e-5, atol=1e-5)


def test_the_fast_and_the_general_update_paths_agree(fitted, tmp_path):
    from lstmcast.inference.stateful import fast_update_series

    full = _table()
    rows = _rows(full, FIT, FIT + 3)
    assert fast_update_series(rows, fitted.meta_) is not None  # a clean DataFrame takes the fast path
    assert fast_update_series(rows.iloc[[0, 2, 1, 3, 4, 5]], fitted.meta_) is None  # out of order: the general one
    rows.to_csv(tmp_path / "new.csv", index=False)
    fast, general = _fresh(fitted), _fresh(fitted)
    assert fast.update(rows) == general.update(tmp_path / "new.csv")
    _same(fast.carried_states(), general.carried_states())


def test_the_doctor_describes_the_carried_state():
    from lstmcast.doctor.report import doctor

    cfg = small_config(data={"id_col": "id", "window": 12, "horizon": 3, "season": None},
                       model={"stateful": True, "hidden_size": 8, "num_layers": 2})
    rep = doctor(cfg, _table(ids=("a", "b", "c")))
    found = [f for f in rep.findings if f.code == "stateful-state"]
    assert len(found) == 1 and "(2, 1, 8)" in found[0].message
    assert "3 x 2 x 1 x 8 x 2 = 96 floats" in found[0].message  # S x layers x D x hidden x 2


@pytest.mark.slow
def test_cli_train_update_predict_and_refusals(tmp_path):
    from tests.conftest import run_cli

    full = _table(n=80)
    _rows(full, 0, 60).to_csv(tmp_path / "hist.csv", index=False)
    _rows(full, 60, 63).to_csv(tmp_path / "new.csv", index=False)
    _rows(full, 65, 66).to_csv(tmp_path / "gap.csv", index=False)
    run = tmp_path / "run"
    res = run_cli("train", "--data", str(tmp_path / "hist.csv"), "--time-col", "time", "--id-col", "id", "--target",
                  "y", "--horizon", "3", "--window", "12", "--set", "model.stateful=true", "--set",
                  "model.hidden_size=8", "--set", "train.max_epochs=1", "--set", "train.min_steps=0", "--set",
                  "train.threads=1", "--no-tensorboard", "--run", str(run))
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run / "state.json").exists()  # the states after the training data, beside the model
    res = run_cli("update", str(run), "--data", str(tmp_path / "new.csv"))
    assert res.returncode == 0 and "6 rows applied to 2 series" in res.stdout, res.stderr[-2000:]
    res = run_cli("predict", str(run), "--out", "-")
    first = pd.read_csv(__import__("io").StringIO(res.stdout))["time"].min()
    assert res.returncode == 0 and first == str(full["time"].iloc[63])  # after the last update
    before = (run / "state.json").read_bytes()
    res = run_cli("update", str(run), "--data", str(tmp_path / "gap.csv"))
    assert res.returncode == 3 and "gap" in res.stderr and (run / "state.json").read_bytes() == before
    state = next(run.glob("state-*.safetensors"))
    state.write_bytes(state.read_bytes()[:-3] + b"xyz")
    res = run_cli("predict", str(run), "--out", "-")
    assert res.returncode == 4 and state.name in res.stderr


def test_concurrent_updates_of_different_series_are_all_kept(fitted, monkeypatch):
    import threading
    import time

    from lstmcast.inference import stateful

    real = stateful.update

    def slow_update(*args, **kwargs):  # both threads inside an update at once, unless updates take turns
        out = real(*args, **kwargs)
        time.sleep(0.2)
        return out
    monkeypatch.setattr(stateful, "update", slow_update)
    full = _table()
    fc = _fresh(fitted)
    fc.carried_states()
    ref = _fresh(fitted)
    ref.update(_rows(full, FIT, FIT + 4))
    threads = [threading.Thread(target=fc.update, args=(_rows(full, FIT, FIT + 4, ids=(s,)),)) for s in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fc.carried_states().rows.tolist() == [FIT + 4, FIT + 4]  # neither update lost
    a, b = fc.carried_states(), ref.carried_states()
    for key in ("h", "c", "out"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), rtol=1e-5, atol=1e-6)


def test_covariates_and_calendar_stream_like_a_fresh_run():
    full = _table(n=70)
    full["temp"] = np.cos(np.arange(len(full)) / 5.0)  # a past covariate
    full["promo"] = (np.arange(len(full)) % 7 == 0).astype(float)  # a known-future covariate
    cfg = small_config(data={"id_col": "id", "window": 12, "horizon": 3, "season": None, "features": ["temp"],
                             "future_features": ["promo"], "calendar": ["hour_of_day"]},
                       model={"stateful": True, "hidden_size": 8, "num_layers": 1},
                       train={"max_epochs": 1, "max_steps_per_epoch": 2, "precision": "fp32", "accel": "eager",
                              "tbptt_steps": 8})
    fc = Forecaster(cfg).fit(_rows(full, 0, 50), progress=False)
    future = _rows(full, 53, 56)[["id", "time", "promo"]]
    fc.update(_rows(full, 50, 53))
    streamed = fc.predict(future=future)
    fresh = fc.predict(_rows(full, 0, 53), future=future)
    pd.testing.assert_frame_equal(streamed, fresh, rtol=1e-5, atol=1e-5)
    other = future.assign(promo=1.0 - future["promo"])  # the known future reaches the forecast
    assert not np.allclose(fc.predict(future=other)["y"], streamed["y"])


def test_one_series_without_an_id_column_streams_too(seasonal_df):
    cfg = small_config(model={"stateful": True, "hidden_size": 8},
                       train={"max_epochs": 1, "max_steps_per_epoch": 2, "precision": "fp32", "accel": "eager"})
    fc = Forecaster(cfg).fit(seasonal_df.iloc[:200], progress=False)
    s = fc.update(seasonal_df.iloc[195:203])  # five rows already seen, three new
    assert (s.series_updated, s.rows_applied, s.rows_ignored) == (1, 3, 5)
    pd.testing.assert_frame_equal(fc.predict(), fc.predict(seasonal_df.iloc[:203]), rtol=1e-5, atol=1e-5)


def test_predict_state_of_some_series_reads_their_states_only(fitted):
    fc = _fresh(fitted)
    both = fc.predict()
    one = fc.predict_state(["b"])
    pd.testing.assert_frame_equal(one, both[both["id"] == "b"].reset_index(drop=True))
    with pytest.raises(DataError, match="no carried state for series.*zz"):
        fc.predict_state(["zz"])


# -- the per-observation fast path (a few series, one new row): equal to the general path ----------------------------
def _general(monkeypatch) -> None:
    """Updates as before the fast path: numpy reads off, batched gathers for any number of series, sequence calls."""
    from lstmcast.inference import carry, stateful

    monkeypatch.setattr(stateful, "fast_update_series", lambda df, meta: None)
    monkeypatch.setattr(stateful, "FEW_SERIES", 0)
    monkeypatch.setattr(stateful, "one_step", lambda *args: None)
    monkeypatch.setattr(carry, "one_step", lambda *args: None)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_one_fused_cell_step_equals_encode_over_one_step(residual, layers):
    from lstmcast.inference.carry import one_step

    torch.manual_seed(layers)
    m = LSTMForecaster(3, 1, 4, hidden_size=8, num_layers=layers, residual=residual, window_norm="none").eval()
    x, h, c = torch.randn(5, 3), torch.randn(layers, 5, 8), torch.randn(layers, 5, 8)
    with torch.inference_mode():
        out, (h1, c1) = m.encode(x[:, None], (h, c))
        o2, h2, c2 = one_step(m, x, h, c)
    torch.testing.assert_close(o2, out[:, -1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h2, h1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(c2, c1, rtol=1e-6, atol=1e-6)
    assert one_step(m.train(), x, h, c) is None  # dropout between layers: the caller encodes


@pytest.mark.parametrize("ids", [("a",), ("a", "b")])
def test_few_series_updates_and_forecasts_equal_the_general_path(fitted, monkeypatch, ids):
    from lstmcast.inference import stateful

    full = _table()
    fast, general = _fresh(fitted), _fresh(fitted)
    steps, real = [], stateful.one_step
    with monkeypatch.context() as mp:
        mp.setattr(stateful, "one_step", lambda *a: steps.append(1) or real(*a))
        got = [fast.update(_rows(full, k, k + 1, ids)) for k in range(FIT, FIT + 6)]
        got.append(fast.update(_rows(full, FIT + 6, FIT + 9, ids)))  # three rows a series: a sequence call
    assert len(steps) == 6 * len(ids)  # the fused cell stepped each one-row update
    assert stateful.fast_update_series(_rows(full, FIT, FIT + 1, ids), fitted.meta_) is not None
    a = fast.predict()
    with monkeypatch.context() as mp:
        _general(mp)
        want = [general.update(_rows(full, k, k + 1, ids)) for k in range(FIT, FIT + 6)]
        want.append(general.update(_rows(full, FIT + 6, FIT + 9, ids)))
        b = general.predict()
    assert got == want
    sa, sb = fast.carried_states(), general.carried_states()
    for key in ("h", "c", "out"):
        torch.testing.assert_close(getattr(sa, key), getattr(sb, key), rtol=1e-6, atol=1e-6)
    assert sa.last_time.tolist() == sb.last_time.tolist() and sa.rows.tolist() == sb.rows.tolist()
    assert list(a.columns) == list(b.columns) and a.dtypes.tolist() == b.dtypes.tolist()
    pd.testing.assert_frame_equal(a, b, rtol=1e-6, atol=1e-6)


def test_the_fast_path_refuses_with_the_general_paths_messages(fitted, monkeypatch):
    full = _table()
    gap = _rows(full, FIT + 1, FIT + 2, ("a",))
    nan = _rows(full, FIT, FIT + 2, ("a",))
    nan.loc[1, "y"] = np.nan
    back = _rows(full, FIT, FIT + 3, ("a",)).iloc[[0, 2, 1]]
    repeat = _rows(full, FIT, FIT + 1, ("a",)).iloc[[0, 0]]

    def errors() -> list[str]:
        out = []
        for bad in (gap, nan, back, repeat):
            fc = _fresh(fitted)
            before = fc.carried_states().copy()
            with pytest.raises(DataError) as err:
                fc.update(bad)
            _same(before, fc.carried_states())  # nothing applied
            out.append(str(err.value))
        return out
    fast = errors()
    with monkeypatch.context() as mp:
        _general(mp)
        assert fast == errors()
    assert "gap" in fast[0] and "missing values" in fast[1]
    assert "out of time order" in fast[2] and "out of time order" in fast[3]


def test_a_single_series_table_takes_the_numpy_read_and_equals_the_general_read(seasonal_df, monkeypatch):
    from lstmcast.inference import stateful

    cfg = small_config(model={"stateful": True, "hidden_size": 8},
                       train={"max_epochs": 1, "max_steps_per_epoch": 2, "precision": "fp32", "accel": "eager"})
    fc = Forecaster(cfg).fit(seasonal_df.iloc[:200], progress=False)
    rows = seasonal_df.iloc[195:203]
    fast = stateful.fast_update_series(rows, fc.meta_)
    assert fast is not None
    assert stateful.fast_update_series(rows.iloc[[0, 2, 1]], fc.meta_) is None  # out of order: the general path
    with monkeypatch.context() as mp:
        mp.setattr(stateful, "fast_update_series", lambda df, meta: None)
        general = stateful.read_update(rows, fc.config_, fc.meta_)
    for key in ("ids", "targets", "features", "freq", "time_col", "id_col", "layout", "tz", "future_features",
                "integer_time"):
        assert getattr(fast, key) == getattr(general, key), key
    assert [t.dtype for t in fast.times] == [t.dtype for t in general.times]
    np.testing.assert_array_equal(fast.times[0], general.times[0])
    np.testing.assert_array_equal(fast.values[0], general.values[0])
    assert fast.values[0].dtype == general.values[0].dtype


@pytest.mark.parametrize(("freq", "integer"), [("h", False), ("15min", False), ("D", False), ("W", False),
                                               ("1", True), ("7", True)])
def test_the_next_grid_time_by_arithmetic_equals_future_times(freq, integer):
    from lstmcast.data.calendar import future_times
    from lstmcast.inference.stateful import _as_int, _next_times
    from lstmcast.run.meta import RunMeta

    meta = RunMeta.model_construct(freq=freq, integer_time=integer, tz=None)
    last = np.array([0, 10**15, 1_700_000_000 * 10**9], np.int64) if not integer else np.array([0, 5, 10**12])
    want = [_as_int(future_times(v if integer else np.int64(v).view("datetime64[ns]"), freq, 1, integer))[0]
            for v in last.tolist()]
    assert _next_times(last, meta).tolist() == want


def test_the_forecast_frame_with_the_horizon_stamps_equals_the_frame_that_computes_them(fitted, monkeypatch):
    from lstmcast.inference import frames, stateful

    fc = _fresh(fitted)
    got = fc.predict()
    real = frames.forecast_table
    monkeypatch.setattr(stateful, "forecast_table", lambda series, meta, y, qs, levels, stamps=None:
                        real(series, meta, y, qs, levels))
    want = fc.predict()
    assert got.dtypes.tolist() == want.dtypes.tolist()
    pd.testing.assert_frame_equal(got, want)
