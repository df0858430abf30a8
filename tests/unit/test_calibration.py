"""Interval calibration (calibration.py): scaled, pooled conformal offsets and the out-of-sample skip shift."""

from __future__ import annotations

import math

import numpy as np
import torch

from lstmcast.inference.calibration import effective_level, out_of_sample_shift, scaled_conformal_offsets, step_scale
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
