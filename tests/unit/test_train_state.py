"""TrainState: what a checkpoint holds besides the optimisation parts, captured and restored together; state a
later feature carries across steps (issue 24's per-series hidden states) joins it as a named ``Carried``."""

from __future__ import annotations

import torch

from lstmcast.config import TrainConfig
from lstmcast.data.windows import Roles
from lstmcast.model.network import LSTMForecaster
from lstmcast.training.accel import resolve
from lstmcast.training.checkpoint import Checkpoint
from lstmcast.training.loop import Trainer
from lstmcast.training.records import TrainData
from lstmcast.training.state import capture, restore


class Hidden:
    """A stand-in for carried per-series state."""

    def __init__(self, h: torch.Tensor):
        self.h = h

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"h": self.h}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.h.copy_(tensors["h"])


def _trainer() -> Trainer:
    torch.manual_seed(0)
    series = torch.randn(120, 1).cumsum(0) / 10
    starts = torch.arange(0, 120 - 10)
    model = LSTMForecaster(1, 1, 2, hidden_size=4, num_layers=1, window=8)
    cfg = TrainConfig(batch_size=8, max_epochs=2, max_steps_per_epoch=3, seed=0, precision="fp32")
    data = TrainData.of(series, starts[:90], starts[90:], Roles(8, 2, 1))
    return Trainer(model, cfg, resolve("cpu", "fp32", 1), data)


def test_the_state_and_carried_tensors_round_trip_through_a_checkpoint(tmp_path):
    a = _trainer()
    a.state.carried["hidden"] = Hidden(torch.arange(6.0).reshape(3, 2))
    a.fit()
    tensors, meta = capture(a.state, a.parts, "fp32", {})
    assert torch.equal(tensors["carried.hidden.h"], torch.arange(6.0).reshape(3, 2))
    b = _trainer()
    fresh = Hidden(torch.zeros(3, 2))
    state = restore(Checkpoint(tmp_path, tensors, meta), b.parts, b.cfg.lr, b.cfg.max_epochs, {"hidden": fresh})
    assert torch.equal(fresh.h, torch.arange(6.0).reshape(3, 2)) and state.carried["hidden"] is fresh
    assert (state.step, state.epoch, state.best_epoch, state.stop_reason) == (
        a.state.step, a.state.epoch, a.state.best_epoch, a.state.stop_reason)
    assert state.finished and [r.as_dict() for r in state.history] == [r.as_dict() for r in a.state.history]
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_a_run_stopped_at_max_epochs_continues_when_resumed_with_more(tmp_path):
    a = _trainer()
    a.fit()
    tensors, meta = capture(a.state, a.parts, "fp32", {})
    b = _trainer()
    state = restore(Checkpoint(tmp_path, tensors, meta), b.parts, b.cfg.lr, max_epochs=5)
    assert a.state.stop_reason == "reached max_epochs=2" and not state.finished and state.stop_reason == ""
