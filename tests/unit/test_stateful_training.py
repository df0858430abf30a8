"""Issue 24 item 1: stateful training. Histories run as consecutive chunks (truncated backpropagation), the state
carried per series id and detached between chunks, reset where a history starts; exact resume mid-epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lstmcast.config import validate_config
from lstmcast.data.load import load_series
from lstmcast.data.prepare import prepare
from lstmcast.errors import CheckpointError, ConfigError
from lstmcast.training import fit as fitting
from lstmcast.training.accel import resolve
from lstmcast.training.checkpoint import CheckpointStore
from lstmcast.training.world import Replicated, Solo
from tests.conftest import small_config


def _frame(n: int = 50, ids: str = "abc") -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="h"), "id": s,
                                    "y": 3 + np.sin(np.arange(n) / 4 + k) + 0.05 * k * np.arange(n) / n})
                      for k, s in enumerate(ids)], ignore_index=True)


def _trainer(run_dir=None, resume=None, world=None, **train):
    frame = _frame()
    cfg = validate_config(small_config(
        data={"id_col": "id", "window": 8, "horizon": 3, "season": None},
        model={"stateful": True, "hidden_size": 6, "num_layers": 2},
        train={"max_epochs": 2, "batch_size": 2, "tbptt_steps": 7, "precision": "fp32", "accel": "eager",
               "device": "cpu", **train}))
    fitting.seed_everything(cfg.train.seed)
    prep = prepare(load_series(frame, cfg), cfg.data, "fp32")
    resolved = fitting.resolve_config(cfg, prep, frame)
    accel = resolve("cpu", "fp32", 1, "eager")
    tensor = torch.from_numpy(prep.scaled)
    idx = torch.from_numpy(prep.index.train)
    data = fitting.train_data(prep, tensor, idx, idx)
    model, trainer, _ = fitting.train_first(resolved, accel, data, prep, [], run_dir, resume, world or Solo())
    return model, trainer, prep, tensor


def test_chunks_carry_the_state_of_one_long_run_and_reset_where_a_history_starts():
    model, trainer, _, tensor = _trainer(lr=1e-9)
    for g in trainer.optimizer.param_groups:  # weights fixed: the carried state alone is compared
        g["lr"] = 0.0
    model.eval()
    plan = trainer._plan()
    sched = trainer.sched
    assert [s for _, s in plan[:2]] == [0, 7] and len(plan) == sum(
        int(np.ceil(sched.train_origins[list(g)].max() / 7)) for g in {tuple(g) for g, _ in plan})
    group = plan[0][0]
    trainer.carried.h.fill_(5.0)  # a state left from another history must not leak in
    for g, start in plan:
        if tuple(g) != tuple(group):
            continue
        if start == 0:
            trainer.carried.reset(torch.from_numpy(g))
        trainer._step(g, start)
    assert not trainer.carried.h.requires_grad  # detached between chunks
    i = int(group[0])
    n = int(np.ceil(sched.train_origins[i] / 7) * 7)
    rows = torch.from_numpy(np.minimum(sched.base[i] + np.arange(n), sched.base[i] + sched.n_rows[i] - 1))
    with torch.no_grad():
        _, (h, c) = model.encode(tensor[rows][None])
    torch.testing.assert_close(trainer.carried.h[i], h[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trainer.carried.c[i], c[:, 0], rtol=1e-5, atol=1e-5)


def test_training_learns_and_scores_validation_from_carried_states():
    _, trainer, _, _ = _trainer(max_epochs=3, lr=1e-2)
    start = trainer.validate()
    result = trainer.fit()
    assert len(result.history) == 3 and all(np.isfinite(r.val_loss) for r in result.history)
    assert result.best_val_loss < start  # it learned something from the chunks


def test_resume_after_an_interruption_mid_epoch_is_exact(tmp_path):
    _, full, _, _ = _trainer(tmp_path / "a", checkpoint_every=1)
    full.fit()
    _, cut, _, _ = _trainer(tmp_path / "b", checkpoint_every=1)
    real_step = cut._step
    calls = [0]

    def step(rows, start):  # the process dies after 5 steps: only the checkpoints survive
        calls[0] += 1
        if calls[0] == 5:
            cut.stop.request()
        return real_step(rows, start)
    cut._step = step
    cut.fit()
    ckpt = CheckpointStore(tmp_path / "b").load_latest()
    assert ckpt.meta["cursor"] is not None and "carried.stateful.h" in ckpt.tensors  # mid-epoch, with the states
    _, resumed, _, _ = _trainer(None, ckpt, checkpoint_every=1)
    resumed.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert torch.equal(full.carried.h, resumed.carried.h)
    assert [r.train_loss for r in full.state.history] == [r.train_loss for r in resumed.state.history]


def test_the_monitor_records_carried_state_norms_and_skips_window_probes():
    from lstmcast.training.monitor import Monitor

    mon = Monitor(None, tensorboard=False)
    _, trainer, _, _ = _trainer(max_epochs=2)
    trainer.callbacks.append(mon)
    trainer.fit()
    norms = mon.summary()["carried_state_norms"]
    assert [n["epoch"] for n in norms] == [1, 2] and all(n["h"] > 0 and n["c"] > 0 for n in norms)
    assert mon.probes == []  # the window probe needs windows: not run, and no failure logged


def test_several_processes_are_refused_one_is_not():
    with pytest.raises(ConfigError, match="one process.*without torchrun"):
        _trainer(world=Replicated(rank=0, world=2, local_world=2))
    _, trainer, _, _ = _trainer()  # Solo, as Forecaster.fit passes it
    assert trainer.world == Solo()


def test_a_checkpoint_without_fitting_carried_states_is_refused(tmp_path):
    _, first, _, _ = _trainer(tmp_path / "a", max_epochs=1)
    first.fit()
    ckpt = CheckpointStore(tmp_path / "a").load_latest()
    _, ok, _, _ = _trainer()
    ok.resume(ckpt)
    assert torch.equal(ok.carried.h, first.carried.h) and ok.state.carried["stateful"] is ok.carried
    ckpt.tensors["carried.stateful.c"] = ckpt.tensors["carried.stateful.c"][:1]  # another run's series
    _, other, _, _ = _trainer()
    with pytest.raises(CheckpointError, match="carried states"):
        other.resume(ckpt)
