"""train.windows_per_epoch (issue 14): an epoch draws that many training windows without replacement across
all series, reproducibly by seed, and a resumed epoch re-draws exactly the same ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lstmcast import Forecaster
from lstmcast.config import ModelConfig, TrainConfig
from lstmcast.data.windows import Roles
from lstmcast.model.build import build_model
from lstmcast.training.accel import resolve
from lstmcast.training.checkpoint import read_checkpoint
from lstmcast.training.loop import Trainer
from lstmcast.training.records import TrainData
from lstmcast.training.sampling import draw
from tests.conftest import seasonal_frame, small_config


@pytest.mark.parametrize("n,k", [(10, 10), (10, 3), (1_000_000, 500), (50, 49), (7, 100)])
def test_draw_gives_distinct_positions_in_range_reproducibly(n, k):
    a = draw(n, k, torch.Generator().manual_seed(3))
    b = draw(n, k, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and len(a) == min(n, k)
    assert len(torch.unique(a)) == len(a) and int(a.min()) >= 0 and int(a.max()) < n
    assert not torch.equal(a, draw(n, k, torch.Generator().manual_seed(4)))


def test_draw_of_few_out_of_many_is_uniform():
    # every position equally likely (chi-square on 20 cells, 2000 draws of 5): catches a bias to small values
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.cat([draw(20, 4, g) for _ in range(2000)]), minlength=20).double()
    expected = 2000 * 4 / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.0  # 19 degrees of freedom: p < 0.001 above 43.8
    first = torch.bincount(torch.stack([draw(1000, 3, g)[0] // 100 for _ in range(2000)]), minlength=10)
    assert int(first.min()) > 140  # the order is random too: the first pick is spread over the range


def _trainer(cfg: TrainConfig, n_train: int = 400) -> Trainer:
    series = torch.randn(n_train + 60, 1)
    starts = torch.arange(n_train + 40)
    model = build_model(ModelConfig(hidden_size=8, num_layers=1, dropout=0.0), 1, 1, 2, 8)
    return Trainer(model, cfg, resolve("cpu", "fp32", 1), TrainData.of(series, starts[:n_train], starts[n_train:],
                                                                     Roles(8, 2, 1)))


def test_an_epoch_visits_windows_per_epoch_distinct_windows():
    t = _trainer(TrainConfig(batch_size=16, windows_per_epoch=96, min_epoch_steps=1, seed=0, precision="fp32"))
    assert t.steps_per_epoch() == 6
    order = t._epoch_order(6)
    assert len(order) == 96 and len(torch.unique(order)) == 96
    again = t._epoch_order(6)  # the next epoch: other windows
    assert not torch.equal(order, again)


def test_min_epoch_steps_redraws_when_windows_per_epoch_is_small():
    t = _trainer(TrainConfig(batch_size=16, windows_per_epoch=20, min_epoch_steps=5, seed=0, precision="fp32"))
    assert t.steps_per_epoch() == 5
    order = t._epoch_order(5)
    assert len(order) == 80 and all(len(torch.unique(order[i:i + 20])) == 20 for i in range(0, 80, 20))


def test_none_keeps_one_pass_and_more_than_the_windows_is_one_pass():
    base = _trainer(TrainConfig(batch_size=16, min_epoch_steps=1, seed=0, precision="fp32"))
    big = _trainer(TrainConfig(batch_size=16, min_epoch_steps=1, seed=0, precision="fp32", windows_per_epoch=10**9))
    assert base.steps_per_epoch() == big.steps_per_epoch() == 25
    assert torch.equal(base._epoch_order(25), big._epoch_order(25))


def _many(n_series: int = 6) -> pd.DataFrame:
    frames = [seasonal_frame(200, seed=i).assign(id=f"s{i}", y=lambda d, i=i: d.y * (1 + i)) for i in range(n_series)]
    return pd.concat(frames, ignore_index=True)


def test_resume_mid_epoch_with_windows_per_epoch_continues_exactly(tmp_path):
    """T2 with sampled epochs: the epoch's windows are re-drawn from the generator state saved at its start."""
    cfg = small_config(data={"id_col": "id"}, train={"precision": "fp32", "windows_per_epoch": 160,
                                                     "checkpoint_every": 3})
    full = Forecaster(cfg).fit(_many(), run_dir=tmp_path / "a")
    assert [r["steps"] for r in full.history_] == [5, 5, 5]
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpt = read_checkpoint(tmp_path / "b" / "checkpoints" / "step-000000012")
    assert ckpt.meta["cursor"]["pos"] == 2  # mid-epoch 3
    resumed = Forecaster(cfg).fit(_many(), run_dir=tmp_path / "b", resume_from=ckpt)
    assert [r["train_loss"] for r in resumed.history_] == [r["train_loss"] for r in full.history_]
    assert np.isfinite(resumed.history_[-1]["val_loss"])


def test_validation_sample_is_all_below_the_cap_and_a_sorted_seeded_subset_above():
    from lstmcast.training.sampling import validation_sample

    val = np.arange(1000, 1100, dtype=np.int64)
    assert validation_sample(val, None, 0) is val and validation_sample(val, 100, 0) is val
    a, b = validation_sample(val, 30, 0), validation_sample(val, 30, 0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 30 and np.all(np.diff(a) > 0) and np.isin(a, val).all()
    assert not np.array_equal(a, validation_sample(val, 30, 1))


def test_fit_validates_on_val_windows_of_them_and_the_doctor_says_so():
    """train.val_windows: many series' validation windows (15 a series at 100k series: 50x an epoch) are a
    fixed sample from the seed; early stopping, the skip's choice and the doctor all see the cap."""
    from lstmcast.doctor.report import render_text

    # the fractional split (last-horizon, the default for tables, leaves one validation window a series)
    cfg = small_config(data={"id_col": "id", "split": "fraction"},
                       train={"precision": "fp32", "max_epochs": 1, "val_windows": 25})
    fc = Forecaster(cfg).fit(_many())
    full = fc.prepared_.index.val
    assert len(full) > 25 and len(fc.training_.trainer.data.val_idx) == 25
    assert np.isin(fc.training_.trainer.data.val_idx.numpy(), full).all()
    again = Forecaster(cfg).fit(_many())
    assert torch.equal(again.training_.trainer.data.val_idx, fc.training_.trainer.data.val_idx)
    assert fc.history_[0]["val_loss"] == again.history_[0]["val_loss"]
    assert fc.training_.doctor.val_sample == 25 and "validates on a sample of 25" in render_text(fc.training_.doctor)
    every = Forecaster(small_config(data={"id_col": "id", "split": "fraction"},
                                    train={"precision": "fp32", "max_epochs": 1, "val_windows": None})).fit(_many())
    assert len(every.training_.trainer.data.val_idx) == len(full) and every.training_.doctor.val_sample is None
