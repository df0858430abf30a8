"""Interval calibration (calibration.py): scaled, pooled conformal offsets and the out-of-sample skip shift."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lstmcast.inference.calibration import (
    choose_method,
    effective_level,
    out_of_sample_shift,
    residual_offsets,
    scaled_conformal_offsets,
    step_scale,
)
from lstmcast.model.quantiles import apply_offsets, interval_metrics
from lstmcast.training.skip_init import SkipFit, fit_skip


def test_effective_level_is_the_finite_sample_conformal_rank():
    assert effective_level(80, 9) == 8 / 9  # ceil(10 * 0.8) / 9
    assert effective_level(95, 10) == 1.0  # too few scores: the largest one
    assert effective_level(80, 10_000) == 0.8001


def test_step_scale_is_positive_and_never_falls_with_the_step():
    resid = np.zeros((4, 3, 2))
    resid[:, 0, 0], resid[:, 1, 0], resid[:, 2, 0] = 2.0, 1.0, 3.0  # a dip at step 1 is smoothed away
    s = step_scale(resid)
    assert s[:, 0].tolist() == [2.0, 2.0, 3.0]
    assert (s[:, 1] > 0).all()  # a perfectly fitted target still gets a positive scale


def test_pooled_scaled_offsets_reach_the_level_at_every_step():
    rng = np.random.default_rng(0)
    H, sd = 4, np.array([1.0, 2.0, 3.0, 4.0])[None, :, None]  # errors grow with the step
    pred = np.zeros((300, H, 1, 3))  # an untrained head: every quantile at the median
    offsets = scaled_conformal_offsets(pred, rng.standard_normal((300, H, 1)) * sd, [80], np.ones((H, 1)) * sd[0])
    assert offsets.shape == (1, H, 1) and np.all(np.diff(offsets[0, :, 0]) > 0)
    fresh = rng.standard_normal((20_000, H, 1)) * sd
    coverage = np.mean(np.abs(fresh) <= offsets[0], axis=0).ravel()
    assert np.all(np.abs(coverage - 0.80) < 0.04), coverage


def test_out_of_sample_shift_refits_only_on_earlier_windows():
    gen = torch.Generator().manual_seed(0)
    L, H = 6, 3
    series = torch.cumsum(torch.randn(200, 1, generator=gen), 0)  # (rows, channels)
    windows = series.unfold(0, L + H, 1)  # (n, C, L + H)
    idx = torch.arange(0, 150)
    skip = SkipFit(weight=torch.zeros(0), prior="naive", lam=0.1, val_loss=math.nan)
    full = fit_skip(windows, idx, idx[:0], L, H, 1, None, choice=skip).weight
    shift, ok = out_of_sample_shift(windows, idx, idx, L, H, 1, None, skip, full, "mse", 0)
    assert shift.shape == (150, H, 1)
    assert not ok[:H + 2].any() and ok[-1]  # the first windows have nothing earlier to refit on
    assert np.abs(shift[ok]).max() > 0 and not np.abs(shift[~ok]).any()
    # windows whose earlier data is all of fit_idx: the refit is the fitted map itself, no shift
    late = torch.arange(180, 190)
    shift, ok = out_of_sample_shift(windows, late, idx, L, H, 1, None, skip, full, "mse", 0)
    assert ok.all() and np.abs(shift).max() < 1e-5


Z = np.array([-1.96, -1.2816, 0.0, 1.2816, 1.96])  # the N(0, 1) quantiles of levels 80 and 95


def _both(pred, y, levels, scale):
    return {"quantile": scaled_conformal_offsets(pred, y, levels, scale),
            "residual": residual_offsets(pred[..., len(levels)], y, levels, scale)}


def test_residual_offsets_reach_the_level_at_every_step():
    rng = np.random.default_rng(0)
    H, sd = 4, np.array([1.0, 2.0, 3.0, 4.0])[None, :, None]
    y = rng.standard_normal((300, H, 1)) * sd
    offsets = residual_offsets(np.zeros_like(y), y, [80, 95], sd[0])
    assert offsets.shape == (2, H, 1) and (offsets[1] > offsets[0]).all() and np.all(np.diff(offsets[0, :, 0]) > 0)
    fresh = rng.standard_normal((20_000, H, 1)) * sd
    for k, level in enumerate([0.80, 0.95]):
        coverage = np.mean(np.abs(fresh) <= offsets[k], axis=0).ravel()
        assert np.all(np.abs(coverage - level) < 0.04), coverage


def test_auto_picks_residual_intervals_where_the_quantile_head_is_too_wide_and_noisy():
    """A head whose widths say nothing about the error (random, 3x too wide on average) must be widened a
    lot to cover; intervals from the median's own errors are far narrower at the same coverage."""
    rng = np.random.default_rng(1)
    levels, H = [80, 95], 3

    def sample(n):
        width = rng.gamma(2.0, 1.5, size=(n, H, 1, 1))  # uninformative widths, mean 3
        return Z * width, rng.standard_normal((n, H, 1))  # the median is right: errors N(0, 1)

    pred, y = sample(2000)
    offsets = _both(pred, y, levels, np.ones((H, 1)))
    method, scores = choose_method(pred, y, levels, offsets)
    assert method == "residual" and scores["residual"] < 0.8 * scores["quantile"]
    new_pred, new_y = sample(20_000)
    raw = interval_metrics(new_y, new_pred, levels, np.ones_like(new_y))
    fixed = interval_metrics(new_y, apply_offsets(new_pred, offsets["residual"], levels, "residual"), levels,
                             np.ones_like(new_y))
    assert raw["coverage_80"] > 0.9 and raw["width_80"] > 5  # too wide before
    assert fixed["coverage_80"] == pytest.approx(0.80, abs=0.02)  # coverage restored, at the nominal level
    assert fixed["coverage_95"] == pytest.approx(0.95, abs=0.01)
    assert fixed["width_80"] < 0.5 * raw["width_80"] and fixed["interval_score_80"] < raw["interval_score_80"]


def test_auto_keeps_the_quantile_head_where_its_widths_track_the_noise():
    rng = np.random.default_rng(2)
    levels, H = [80, 95], 3
    sd = rng.choice([0.2, 3.0], size=(2000, H, 1))  # calm and wild windows, and the head knows which
    pred, y = Z * sd[..., None], rng.standard_normal((2000, H, 1)) * sd
    method, scores = choose_method(pred, y, levels, _both(pred, y, levels, np.ones((H, 1))))
    assert method == "quantile" and scores["quantile"] < scores["residual"]
