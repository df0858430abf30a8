"""Whole-step graphs: dispatch, re-capture, warm-up undone, validation graph and the eager fallback.

``ReplayBackend`` stands in for torch.cuda.graphs on CPU: capture records the function without
running it (as CUDA stream capture does), replay runs it into the same static output tensor. With it,
every line of StepGraphs runs here; the real-CUDA checks are marked ``gpu``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from lstmcast.config import TrainConfig
from lstmcast.data.windows import Roles
from lstmcast.model.network import LSTMForecaster
from lstmcast.training import graphs
from lstmcast.training.accel import graphs_decision, resolve
from lstmcast.training.loop import Trainer
from lstmcast.training.records import TrainData

CAPTURE_ERROR = "CUDA error: operation not permitted when stream is capturing"


class ReplayBackend:
    def __init__(self, fail: bool = False):
        self.fail, self.warmups, self.captures, self.replays = fail, 0, 0, 0

    def warmup(self, fn, n):
        self.warmups += n
        for _ in range(n):
            fn()

    def capture(self, fn):
        self.captures += 1
        if self.fail:
            raise RuntimeError(CAPTURE_ERROR)
        out, backend = torch.empty(0), self

        class Graph:
            def replay(self):
                backend.replays += 1
                r = fn()
                out.resize_(r.shape).copy_(r)

        return Graph(), out


def _pair(dropout=0.1, batch=16, fail=False, precision="fp32"):
    """An eager Trainer and a graphed one (ReplayBackend) on identical copies of one model."""
    torch.manual_seed(0)
    t = torch.arange(400, dtype=torch.float32)
    series = torch.stack([torch.sin(t / 5), torch.cos(t / 9)], 1) + 0.05 * torch.randn(400, 2)  # (N, C=2)
    L, H = 10, 3
    starts = torch.arange(0, 400 - L - H + 1)
    model = LSTMForecaster(2, 1, H, hidden_size=8, num_layers=2, dropout=dropout, window=L)
    cfg = TrainConfig(batch_size=batch, max_epochs=2, seed=0, precision=precision, lr=3e-3)
    accel = resolve("cpu", precision, 1)
    args = (TrainData.of(series, starts[:300], starts[300:], Roles(L, H, 1)),)
    eager = Trainer(copy.deepcopy(model), cfg, accel, *args)
    graphed = Trainer(copy.deepcopy(model), cfg, replace(accel, graphs=True), *args)
    backend = ReplayBackend(fail)
    graphed._graphs = graphs.StepGraphs(graphed.step_target(), backend)
    return eager, graphed, backend


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_graphed_training_equals_eager_training_exactly():
    eager, graphed, backend = _pair()
    results = []
    for t in (eager, graphed):
        torch.manual_seed(5)  # dropout masks come from the global RNG: the warm-up must not consume it
        results.append(t.fit().history)
    for a, b in zip(*results):
        assert (a.train_loss, a.val_loss, a.grad_norm) == (b.train_loss, b.val_loss, b.grad_norm)
    assert _same_weights(eager, graphed)
    assert backend.captures == 2 and backend.warmups == 4  # one step graph + one validation graph
    # every step, each epoch's validation and the check at step 0
    assert backend.replays == sum(r.steps for r in results[1]) + len(results[1]) + 1


def test_warm_up_steps_are_undone_before_the_first_replay():
    eager, graphed, backend = _pair()
    idx = eager.data.train_idx[:16]
    torch.manual_seed(1)
    eager.train_step(idx)
    torch.manual_seed(1)
    loss, norm, bad = graphed.train_step(idx)
    assert backend.warmups == 3 and backend.replays == 1
    assert _same_weights(eager, graphed)
    steps = {float(s["step"]) for s in graphed.optimizer.state.values()}
    assert steps == {1.0}  # not 1 + the three warm-up steps
    assert all(g["capturable"] for g in graphed.optimizer.param_groups)
    assert bad.item() == 0.0 and loss.item() > 0 and norm.item() > 0


def test_a_learning_rate_change_recaptures_and_takes_effect():
    eager, graphed, backend = _pair(dropout=0.0)
    idx = eager.data.train_idx[:16]
    for t in (eager, graphed):
        t.train_step(idx)
        for g in t.optimizer.param_groups:
            g["lr"] = 0.05  # what the plateau scheduler and the guard's rollback do
        t.train_step(idx)
    assert backend.captures == 2
    assert _same_weights(eager, graphed)


def test_replaced_optimizer_state_recaptures():
    _, graphed, backend = _pair(dropout=0.0)
    idx = graphed.data.train_idx[:16]
    graphed.train_step(idx)
    graphed.optimizer.load_state_dict(graphed.optimizer.state_dict())  # a resume or rollback
    graphed.train_step(idx)
    assert backend.captures == 2


def test_one_graph_per_batch_size_then_eager(caplog):
    eager, graphed, backend = _pair(dropout=0.0)
    sizes = [16, 7, 16, 5]
    with caplog.at_level(logging.INFO, logger="lstmcast.training.graphs"):
        for t in (eager, graphed):
            lo = 0
            for n in sizes:
                t.train_step(t.data.train_idx[lo:lo + n])
                lo += n
    assert backend.captures == 2 and sorted(graphed._graphs.train_graphs) == [7, 16]
    assert "batch size 5 runs eagerly: 2 step graphs exist already" in caplog.text
    assert _same_weights(eager, graphed)


def test_a_failed_capture_falls_back_to_eager_with_the_reason(caplog):
    eager, graphed, backend = _pair(fail=True)
    with caplog.at_level(logging.WARNING, logger="lstmcast.training.graphs"):
        for t in (eager, graphed):
            torch.manual_seed(3)
            for s in range(3):
                t.train_step(t.data.train_idx[s * 16:(s + 1) * 16])
    assert not graphed._graphs.active
    assert (f"capturing the training step (batch 16) failed: RuntimeError: {CAPTURE_ERROR}; training "
            "continues eagerly") in caplog.text
    assert backend.captures == 1  # no second attempt
    assert _same_weights(eager, graphed)
    assert graphed.validate() == eager.validate()


def test_validation_is_one_graph_replayed_per_epoch():
    eager, graphed, backend = _pair()
    v1, v2 = graphed.validate(batch_size=32), graphed.validate(batch_size=32)  # 87 windows: 3 batches
    assert v1 == v2 == pytest.approx(eager.validate(batch_size=32), rel=1e-6)
    assert backend.captures == 1 and backend.replays == 2
    assert graphed.model.training  # validate() restores train mode


def test_graphs_are_wanted_on_cuda_only_and_attach_respects_that():
    assert graphs_decision("eager", torch.device("cuda")) == (False, "train.accel is eager")
    on, why = graphs_decision("auto", torch.device("cpu"))
    assert not on and why.startswith("CUDA graphs need a CUDA device")
    assert graphs_decision("graphs", torch.device("cuda"))[0]
    eager, graphed, _ = _pair()
    assert eager._graphs is None
    assert graphs.attach(graphed.step_target(), graphed.accel.graphs) is None  # CPU: nothing to capture with
    streaming = SimpleNamespace(device=torch.device("cuda"), windows=torch.zeros(3, 1, 4))
    assert graphs.attach(streaming, True) is None  # host-resident windows run eagerly


def test_resolve_warns_when_graphs_are_asked_for_on_cpu(caplog):
    with caplog.at_level(logging.WARNING, logger="lstmcast.training.accel"):
        accel = resolve("cpu", "fp32", 1, "graphs")
    assert not accel.graphs
    assert "train.accel is graphs but CUDA graphs need a CUDA device" in caplog.text


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphed_training_matches_eager(precision):
    from lstmcast.training.graphs import StepGraphs

    torch.manual_seed(0)
    dev = torch.device("cuda")
    series = torch.randn(3000, 1, device=dev).cumsum(0) / 30
    L, H = 96, 48
    starts = torch.arange(0, 3000 - L - H + 1, device=dev)
    model = LSTMForecaster(1, 1, H, hidden_size=64, num_layers=2, dropout=0.0, window=L).to(dev)
    cfg = TrainConfig(batch_size=32, max_epochs=1, max_steps_per_epoch=30, precision=precision)
    trainers = []
    for mode in ("eager", "graphs"):
        accel = resolve("cuda", precision, None, mode)
        trainers.append(Trainer(copy.deepcopy(model), cfg, accel,
                                TrainData.of(series, starts[:2500], starts[2500:], Roles(L, H, 1))))
    eager, graphed = trainers
    assert isinstance(graphed._graphs, StepGraphs) and eager._graphs is None
    losses = []
    for t in trainers:
        gen = torch.Generator(device=dev).manual_seed(1)
        for _ in range(30):
            loss, _, _ = t.train_step(starts[torch.randint(0, 2500, (32,), generator=gen, device=dev)])
        losses.append((loss.item(), t.validate()))
    assert graphed._graphs.active and graphed._graphs.captures == 2
    tol = 1e-3 if precision == "fp32" else 2e-2
    assert losses[1] == pytest.approx(losses[0], rel=tol)
