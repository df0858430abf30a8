"""Issue 20: a table's forecast combines the global model's with each series' own Theta forecast
(lstmcast.model.theta, model.local). The Theta forecasts of many histories at once equal each history's alone,
recover a linear trend and a multiplicative season at the right phase, and read only the recent HISTORY_CAP
points; the combination is (1 - w) model + w Theta in predict and in the backtest (each origin's Theta from the
series before it), for every quantile; a table resolves to it, one series and a stateful model do not; meta.json
keeps it and refuses an edited weight."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster
from lstmcast.config import validate_config
from lstmcast.errors import CheckpointError, ConfigError
from lstmcast.model import theta
from lstmcast.model.theta import HISTORY_CAP, theta_forecasts
from tests.faults.run_fixtures import rehash

H = 6


# -- the Theta method ------------------------------------------------------------------------------------
def test_a_line_is_continued_exactly_with_the_full_drift_and_at_half_slope_classically():
    x = 3.0 + 2.0 * np.arange(20)
    full = theta_forecasts([x], 4, None, drift=1.0)[0]
    assert np.allclose(full, x[-1] + 2.0 * np.arange(1, 5))  # SES picks alpha 1: the last value, plus the slope
    half = theta_forecasts([x], 4, None, drift=0.5)[0]
    assert np.allclose(half, x[-1] + 1.0 * np.arange(1, 5))


def test_a_constant_a_single_point_and_an_empty_history():
    f = theta_forecasts([np.full(9, 7.0), np.array([4.0]), np.array([])], 3, 4)
    assert np.allclose(f[0], 7.0) and np.allclose(f[1], 4.0)
    assert np.isnan(f[2]).all()


@pytest.mark.parametrize("n", [60, 61, 65, 71])  # histories that do and do not end on a season boundary
def test_a_multiplicative_season_is_recovered_at_the_right_phase(n):
    m = 12
    pattern = 1 + 0.3 * np.sin(2 * np.pi * np.arange(m) / m)
    x = 100.0 * pattern[np.arange(n) % m]
    f = theta_forecasts([x], 15, m)[0]
    assert np.allclose(f, 100.0 * pattern[np.arange(n, n + 15) % m], rtol=1e-9)


def test_no_season_is_divided_out_of_noise_a_short_or_a_non_positive_series():
    rng = np.random.default_rng(0)
    noise = 50 + rng.standard_normal(60)
    X = np.vstack([noise, noise - 60.0])
    valid = np.isfinite(X)
    assert np.array_equal(theta.seasonal_indices(X, valid, 12), np.ones((2, 12)))  # no season; not positive
    short = np.tile(1 + 0.3 * np.sin(2 * np.pi * np.arange(12) / 12), 2)[None]  # two seasons only
    assert np.array_equal(theta.seasonal_indices(short, np.isfinite(short), 12), np.ones((1, 12)))


def test_many_histories_at_once_equal_each_alone_and_match_a_plain_loop():
    rng = np.random.default_rng(1)
    hist = [np.cumsum(rng.standard_normal(n)) + 30 + (5 * np.sin(np.arange(n) * np.pi / 2) if n > 20 else 0)
            for n in (1, 2, 3, 8, 13, 40, 77)]
    together = theta_forecasts(hist, 5, 4, drift=0.5)
    for x, f in zip(hist, together):
        assert np.allclose(f, theta_forecasts([x], 5, 4, drift=0.5)[0], rtol=0, atol=1e-9)
    x = hist[4]  # no season (13 < 3 x 4): SES over the alphas and the slope, written out plainly
    best = None
    for a in theta.ALPHAS:
        level, sse = x[0], 0.0
        for v in x[1:]:
            sse += (v - level) ** 2
            level += a * (v - level)
        if best is None or sse < best[0]:
            best = (sse, a, level)
    _, a, level = best
    b = np.polyfit(np.arange(len(x)), x, 1)[0]
    h = np.arange(1, 6)
    assert np.allclose(together[4], level + 0.5 * b * (h - 1 + 1 / a - (1 - a) ** len(x) / a))


def test_only_the_recent_history_cap_points_are_read():
    rng = np.random.default_rng(2)
    x = np.cumsum(rng.standard_normal(HISTORY_CAP + 300))
    assert np.array_equal(theta_forecasts([x], 3, None), theta_forecasts([x[-HISTORY_CAP:]], 3, None))


# -- the combination in lstmcast ---------------------------------------------------------------------------
def _panel(n_series: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n_series):
        n = 30 + 7 * i
        t = np.arange(n)
        y = 50 + 4 * i + 0.4 * t * (i % 3) + 3 * np.sin(2 * np.pi * t / 12) + rng.standard_normal(n)
        parts.append(pd.DataFrame({"id": f"s{i}", "date": pd.date_range("2001-01-01", periods=n, freq="MS"),
                                   "y": y}))
    return pd.concat(parts, ignore_index=True)


def _cfg(**model):
    model = {"local": "theta", **model}  # the combination's mechanics; the auto gate has tests of its own below
    return {"data": {"time_col": "date", "target": "y", "id_col": "id", "horizon": H, "season": 12},
            "model": {"hidden_size": 8, "num_layers": 1, **model},
            "train": {"max_epochs": 2, "min_steps": 0, "min_epoch_steps": 1, "refit": False, "precision": "fp32"}}


@pytest.fixture(scope="module")
def fitted() -> tuple[Forecaster, pd.DataFrame]:
    df = _panel()
    return Forecaster(_cfg()).fit(df), df


def _without_local(fc: Forecaster) -> Forecaster:
    alone = Forecaster(fc.config)
    alone.run_ = fc.run_.__class__(**{**fc.run_.__dict__, "meta": fc.meta_.model_copy(update={"local": None})})
    return alone


def test_theta_combines_a_table_and_auto_keeps_one_series_alone(fitted):
    fc, df = fitted
    assert fc.config_.model.local == "theta"
    assert (fc.meta_.local.method, fc.meta_.local.weight, fc.meta_.local.drift) == ("theta", 0.3, theta.LOCAL_DRIFT)
    one = Forecaster(_cfg(local="auto") | {"data": {"time_col": "date", "target": "y", "horizon": H, "season": 12}})
    one.fit(df[df["id"] == "s5"].drop(columns="id"))
    assert one.config_.model.local == "none" and one.meta_.local is None
    with pytest.raises(ConfigError, match="model.local=theta"):
        validate_config({"model": {"stateful": True, "local": "theta"}})


def test_predict_is_the_weighted_mean_of_the_model_and_each_series_theta(fitted):
    fc, df = fitted
    w, d = fc.meta_.local.weight, fc.meta_.local.drift
    combined, alone = fc.predict(df), _without_local(fc).predict(df)
    for sid, part in df.groupby("id"):
        th = theta_forecasts([part["y"].to_numpy()], H, 12, d)[0]
        got = combined.loc[combined["id"] == sid, "y"].to_numpy()
        model = alone.loc[alone["id"] == sid, "y"].to_numpy()
        assert np.allclose(got, (1 - w) * model + w * th, rtol=1e-5, atol=1e-4)
        assert not np.allclose(got, model)  # the combination changes the forecast


def test_the_backtest_combines_each_origin_with_theta_of_the_series_before_it(fitted):
    fc, df = fitted
    w, d = fc.meta_.local.weight, fc.meta_.local.drift
    fc.backtest(df)
    bt = fc.backtest_
    alone = _without_local(fc)
    alone.backtest(df)
    bt0 = alone.backtest_
    assert np.array_equal(bt.origins, bt0.origins) and len(bt.origins) > 0
    ids = fc.meta_.ids
    for k, (i, t) in enumerate(zip(bt.series_idx.tolist(), bt.origins.tolist())):
        y = df.loc[df["id"] == ids[i], "y"].to_numpy()
        th = theta_forecasts([y[:t]], H, 12, d)[0]  # the series before the origin only
        assert np.allclose(bt.forecasts["model"][k, :, 0], (1 - w) * bt0.forecasts["model"][k, :, 0] + w * th,
                           rtol=1e-5, atol=1e-4)
    for name in ("naive", "seasonal_naive"):
        assert np.array_equal(bt.forecasts[name], bt0.forecasts[name])


def test_every_quantile_moves_with_the_point_forecast():
    df = _panel()
    fc = Forecaster(_cfg(levels=[80])).fit(df)
    combined, alone = fc.predict(df), _without_local(fc).predict(df)
    shift = combined["y"].to_numpy() - alone["y"].to_numpy()
    assert np.abs(shift).max() > 1e-3
    for col in ("y_lo_80", "y_hi_80"):
        assert np.allclose(combined[col].to_numpy() - alone[col].to_numpy(), shift, atol=1e-4)


def test_the_weight_is_a_setting_and_none_is_the_model_alone(fitted):
    fc, df = fitted
    none = Forecaster(_cfg(local="none")).fit(df)
    assert none.meta_.local is None
    assert np.allclose(none.predict()["y"].to_numpy(), _without_local(fc).predict(df)["y"].to_numpy())
    half = Forecaster(_cfg(local_weight=0.5)).fit(df)
    assert half.meta_.local.weight == 0.5
    with pytest.raises(ConfigError, match="local_weight"):
        validate_config({"model": {"local_weight": 1.5}})


def test_meta_json_keeps_the_combination_and_refuses_an_edited_weight(fitted, tmp_path):
    fc, df = fitted
    run = tmp_path / "run"
    fc.save(run)
    loaded = Forecaster.load(run)
    assert loaded.meta_.local == fc.meta_.local
    assert np.allclose(loaded.predict(df)["y"].to_numpy(), fc.predict(df)["y"].to_numpy())
    meta = json.loads((run / "meta.json").read_text())
    meta["local"]["weight"] = 2.0
    (run / "meta.json").write_text(json.dumps(meta))
    rehash(run)  # as someone editing the folder would: the value itself is checked
    with pytest.raises(CheckpointError, match="local.weight"):
        Forecaster.load(run)


def test_the_report_says_the_forecast_is_combined_and_reads_the_weight_as_a_number_only():
    from lstmcast.report.html import summary_section

    metrics = {"model": {"MASE": 0.9}, "naive": {"MASE": 1.1}, "seasonal_naive": {"MASE": 1.2}}
    meta = {"horizon": 4, "targets": ["y"], "window": 8, "local": {"method": "theta", "weight": 0.3, "drift": 1.0}}
    assert "0.70 x the model's + 0.30 x the series' own Theta forecast" in summary_section(meta, metrics, None)
    for local in (None, {"weight": 0}, {"weight": "<script>"}):
        assert "Theta" not in summary_section({**meta, "local": local}, metrics, None)


# -- model.local auto: the validation windows decide ---------------------------------------------------------
def _gate_table(kind: str, n_series: int = 12, n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    parts = []
    for i in range(n_series):
        t = np.arange(n)
        if kind == "noisy":  # noise about each series' level: its whole history measures the level, a window less well
            y = 50 + 10 * i + 5 * rng.standard_normal(n)
        else:  # a period-2 zigzag: a linear map of the window continues it; SES plus drift smooths it away
            y = 100 + 3 * i + 25 * (-1.0) ** t + 0.05 * rng.standard_normal(n)
        parts.append(pd.DataFrame({"id": f"g{i:02d}", "date": pd.date_range("2001-01-01", periods=n, freq="MS"),
                                   "y": y}))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("kind, expect", [("noisy", "theta"), ("zigzag", "none")])
def test_auto_takes_theta_in_only_where_it_beats_the_model_on_validation(kind, expect):
    cfg = _cfg(local="auto")
    cfg["data"]["season"] = 1
    fc = Forecaster(cfg).fit(_gate_table(kind))
    assert fc.config_.model.local == expect  # config.yaml records what auto became
    if expect == "theta":
        gate = fc.meta_.local.gate
        assert set(gate) == {"w=0", "w=0.1", "w=0.2", "w=0.3", "t"}
        assert min(gate[k] for k in gate if k not in ("w=0", "t")) < gate["w=0"] and gate["t"] < 0
        assert fc.meta_.local.weight == 0.3  # the measured weight, not the gate's best
    else:
        assert fc.meta_.local is None


def test_the_gate_reads_each_validation_window_history_before_its_origin_only():
    from lstmcast.inference.local import validation_histories

    fc = Forecaster(_cfg(local="none")).fit(_panel())
    prep = fc.prepared_
    starts = prep.index.val
    sidx = prep.row_series()[starts]
    hist = validation_histories(prep, starts, sidx)
    df = _panel()
    for h, s, i in zip(hist, starts.tolist(), sidx.tolist()):
        y = df.loc[df["id"] == prep.series.ids[i], "y"].to_numpy()
        origin = s + prep.window - prep.index.offsets[i] - prep.pad_of(i)  # the window's first target row
        assert len(h) == origin and np.allclose(h[:, 0], y[:origin], rtol=1e-5, atol=1e-3)


def test_the_gate_keeps_the_model_alone_only_where_theta_is_clearly_worse():
    from lstmcast.inference.local import GATE_T, decide

    rng = np.random.default_rng(4)
    base = rng.uniform(0.5, 2.0, 400)

    def per(shift, noise):  # each weight w: the model's errors + w x shift on average, + centred noise
        z = rng.standard_normal((3, 400))
        z -= z.mean(axis=1, keepdims=True)
        return {0.0: base, **{w: base + w * shift + noise * z[k] for k, w in enumerate((0.1, 0.2, 0.3))}}

    on, gate = decide(per(-0.5, 0.05))  # better with Theta
    assert on and gate["t"] < 0 and gate["w=0.3"] < gate["w=0"]
    on, gate = decide(per(0.1, 0.2))  # a little worse (t about 1 at w = 0.1): the benefit of the doubt
    assert on and 0 < gate["t"] <= GATE_T
    on, gate = decide(per(0.5, 0.05))  # clearly worse at every weight
    assert not on and gate["t"] > GATE_T
    assert decide({}) == (True, {}) and decide({0.0: np.array([]), 0.1: np.array([])})[0]
    on, gate = decide({0.0: np.ones(1), 0.1: np.full(1, 9.0), 0.2: np.full(1, 9.0), 0.3: np.full(1, 9.0)})
    assert on  # one series: no spread to judge by
