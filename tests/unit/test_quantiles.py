"""Quantile maths (lstmcast.model.quantiles) and the non-crossing quantile head of LSTMForecaster."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstmcast.config import ModelConfig, validate_config
from lstmcast.errors import ConfigError
from lstmcast.model.build import build_model
from lstmcast.model.network import LSTMForecaster
from lstmcast.model.quantiles import (
    apply_offsets,
    conformal_offsets,
    interval_metrics,
    pinball,
    pinball_loss,
    quantiles_for,
    seasonal_naive_offsets,
)


def test_quantiles_for_levels_are_ascending_with_the_median():
    assert quantiles_for([95, 80]) == [0.025, 0.1, 0.5, 0.9, 0.975]
    assert quantiles_for([50]) == [0.25, 0.5, 0.75]


def test_pinball_loss_against_hand_computed_values():
    # y = 1; quantile 0.1 at 0 (under by 1): 0.1 * 1; median at 3 (over by 2): 0.5 * 2; 0.9 at 0.5: 0.9 * 0.5
    pred = torch.tensor([[[[0.0, 3.0, 0.5]]]])  # (B=1, H=1, T=1, Q=3)
    y = torch.tensor([[[1.0]]])
    want = (0.1 * 1 + 0.5 * 2 + 0.9 * 0.5) / 3
    loss = pinball_loss(torch.tensor([0.1, 0.5, 0.9]))(pred, y)
    assert loss.item() == pytest.approx(want)
    # the numpy score divides by the MASE scale: scale 2 halves it
    assert pinball(np.array([[[1.0]]]), pred.numpy().astype(float), np.array([0.1, 0.5, 0.9]),
                   np.array([[[2.0]]])) == pytest.approx(want / 2)


def test_interval_score_against_hand_computed_values():
    y = np.array([[[0.0], [5.0]]])  # (n=1, H=2, T=1): inside, then 1 above the interval
    q = np.array([[[[-1.0, 0.0, 3.0]], [[2.0, 3.0, 4.0]]]])  # (1, 2, 1, Q=3): the 50% interval
    m = interval_metrics(y, q, [50], np.ones((1, 1, 1)))
    assert m["coverage_50"] == 0.5
    assert m["width_50"] == pytest.approx((4 + 2) / 2)
    assert m["interval_score_50"] == pytest.approx((4 + (2 + 2 / 0.5 * 1)) / 2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=st.lists(st.integers(1, 99), min_size=1, max_size=4, unique=True), H=st.integers(1, 5),
       T=st.integers(1, 2), seed=st.integers(0, 2**16), scale=st.floats(0.01, 100.0))
def test_quantile_head_never_crosses(levels, H, T, seed, scale):
    torch.manual_seed(seed)
    model = LSTMForecaster(3, T, H, hidden_size=4, num_layers=1, window=6, linear_skip=True,
                           quantiles=quantiles_for(levels))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale ** 0.5)
    y = model(torch.randn(5, 6, 3) * scale)
    assert y.shape == (5, H, T, 2 * len(levels) + 1)
    assert bool((y.diff(dim=-1) >= 0).all())


@settings(max_examples=40, deadline=None)
@given(levels=st.lists(st.integers(1, 99), min_size=1, max_size=3, unique=True), seed=st.integers(0, 2**16))
def test_calibration_offsets_never_make_quantiles_cross(levels, seed):
    rng = np.random.default_rng(seed)
    levels = sorted(levels)
    Q = 2 * len(levels) + 1
    pred = np.sort(rng.normal(size=(7, 3, 2, Q)), axis=-1)
    for method in ("quantile", "residual"):
        out = apply_offsets(pred, rng.normal(scale=3, size=(len(levels), 3, 2)), levels, method)
        assert (np.diff(out, axis=-1) >= 0).all()
        np.testing.assert_array_equal(out[..., len(levels)], pred[..., len(levels)])  # the median stays


def test_residual_offsets_centre_the_intervals_on_the_median_whatever_the_head_says():
    pred = np.array([[[[-9.0, -0.1, 1.0, 1.2, 30.0]]]])  # (1, H=1, T=1, Q=5): a lopsided head
    out = apply_offsets(pred, np.array([[[0.5]], [[2.0]]]), [80, 95], "residual")
    np.testing.assert_allclose(out[0, 0, 0], [-1.0, 0.5, 1.0, 1.5, 3.0])


def test_calibration_restores_coverage_of_an_over_confident_model():
    """Intervals a third as wide as they should be cover far too little; conformal offsets fix that."""
    rng = np.random.default_rng(0)
    levels, H = [80, 95], 4
    z = np.array([-1.96, -1.2816, 0.0, 1.2816, 1.96])
    confident = np.broadcast_to(z / 3, (1, H, 1, 5))  # the model thinks sigma = 1/3; it is 1

    def sample(n):
        return rng.standard_normal((n, H, 1)), np.repeat(confident, n, axis=0)

    y_cal, p_cal = sample(2000)
    y_new, p_new = sample(20000)
    scale = np.ones((1, 1, 1))
    raw = interval_metrics(y_new, p_new, levels, scale)
    assert raw["coverage_80"] < 0.5 and raw["coverage_95"] < 0.6
    offsets, pooled = conformal_offsets(p_cal, y_cal, levels)
    assert not pooled and offsets.shape == (2, H, 1) and (offsets > 0).all()
    fixed = interval_metrics(y_new, apply_offsets(p_new, offsets, levels), levels, scale)
    assert fixed["coverage_80"] == pytest.approx(0.80, abs=0.02)
    assert fixed["coverage_95"] == pytest.approx(0.95, abs=0.01)
    # an over-wide model is narrowed the same way
    offsets, _ = conformal_offsets(p_cal * 9, y_cal, levels)
    assert (offsets < 0).all()
    assert interval_metrics(y_new, apply_offsets(p_new * 9, offsets, levels), levels, scale)["coverage_80"] \
        == pytest.approx(0.80, abs=0.02)


def test_few_calibration_windows_pool_over_horizon_steps():
    rng = np.random.default_rng(1)
    offsets, pooled = conformal_offsets(np.zeros((10, 3, 1, 3)), rng.standard_normal((10, 3, 1)), [80])
    assert pooled and np.all(offsets == offsets[:, :1])


def test_seasonal_naive_offsets_are_its_in_sample_error_quantiles():
    history = np.arange(40, dtype=float)[:, None]  # y[t] - y[t - lag] == lag exactly
    off = seasonal_naive_offsets(history, horizon=3, season=2, quantiles=[0.1, 0.5, 0.9])
    assert off.shape == (3, 1, 3)
    np.testing.assert_allclose(off[:, 0, 0], [2, 2, 4])  # lags 2, 2, 4
    assert (off[:, :, 1] == 0).all()  # the median is the point forecast


def test_point_model_keeps_its_state_dict_keys_and_forecast():
    torch.manual_seed(0)
    point = build_model(ModelConfig(hidden_size=8, dropout=0.0), 2, 1, 3, 10)
    torch.manual_seed(0)
    same = build_model(ModelConfig(hidden_size=8, dropout=0.0, levels=[]), 2, 1, 3, 10)
    assert list(point.state_dict()) == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0",
                                        "lstm.bias_hh_l0", "lstm.weight_ih_l1", "lstm.weight_hh_l1",
                                        "lstm.bias_ih_l1", "lstm.bias_hh_l1", "head.weight", "head.bias",
                                        "skip.weight"]
    assert list(same.state_dict()) == list(point.state_dict())
    x = torch.randn(4, 10, 2)
    assert point(x).shape == (4, 3, 1) and torch.equal(point(x), same(x))
    q = build_model(ModelConfig(hidden_size=8, dropout=0.0, levels=[80]), 2, 1, 3, 10)
    assert set(q.state_dict()) - set(point.state_dict()) == {"qhead.weight", "qhead.bias"}


@pytest.mark.parametrize("levels, message", [
    ([80, 100], r"model.levels: .*integer 1..99.*\[100\] is outside"),
    ([0], r"\[0\] is outside"),
    ([80, 80], r"must not repeat a level"),
    ([80.5], r"model.levels.0"),
])
def test_levels_are_validated_strictly(levels, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"model": {"levels": levels}})


def test_levels_from_the_command_line_are_sorted():
    assert validate_config({"model": {"levels": "95,80"}}).model.levels == [80, 95]
    with pytest.raises(ConfigError, match="calibration"):
        validate_config({"model": {"calibration": "isotonic"}})


def test_interval_method_is_validated_and_residual_needs_calibration():
    assert validate_config({"model": {"levels": [80]}}).model.interval_method == "auto"
    with pytest.raises(ConfigError, match="interval_method"):
        validate_config({"model": {"levels": [80], "interval_method": "parametric"}})
    with pytest.raises(ConfigError, match=r"interval_method=residual .* set model.calibration=conformal"):
        validate_config({"model": {"levels": [80], "interval_method": "residual", "calibration": "none"}})
    assert validate_config({"model": {"levels": [80], "calibration": "none"}}).model.calibration == "none"


@pytest.mark.parametrize("targets,season,horizon", [(1, 7, 14), (2, 12, 5), (1, 1, 3)])
def test_seasonal_naive_offsets_of_many_histories_equal_each_one_s(targets, season, horizon):
    """The backtest's seasonal-naive intervals for many series: stacked per history length and lag (one
    np.quantile per series and step was the slowest part at 100k series), value for value the per-series
    offsets, including histories with missing values, histories shorter than a lag, and split chunks."""
    from lstmcast.model.quantiles import quantiles_for, seasonal_naive_offsets, seasonal_naive_offsets_many

    rng = np.random.default_rng(season)
    hist = []
    for i in range(60):
        n = int(rng.choice([4, 40, 90]))
        h = rng.standard_normal((n, targets)).cumsum(axis=0) * rng.uniform(0.1, 10)
        if i % 9 == 0:
            h[rng.integers(n)] = np.nan
        hist.append(h)
    qs = quantiles_for([80, 95])
    many = seasonal_naive_offsets_many(hist, horizon, season, qs, chunk=7)
    for i, h in enumerate(hist):
        assert np.array_equal(many[i], seasonal_naive_offsets(h, horizon, season, qs))
    assert np.abs(many).max() > 0
