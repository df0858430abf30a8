"""Whole-step CUDA graphs: the training step and the validation pass, captured once and replayed.

A small LSTM step on a GPU is bound by kernel launches and Python, not arithmetic: on an H100 the
eager step at (64x2, L96, B32) costs ~3.6 ms and the same step replayed from a CUDA graph 0.43 ms
(docs/PERFORMANCE.md). ``StepGraphs`` captures the Trainer's own eager step (``Trainer.eager_step``: index
gather, autocast forward, loss, backward, unscale, clip, non-finite guard, fused capturable AdamW step)
so graphed and eager training run the same code, and replays it:

- one graph per batch size (the loop drops the partial last batch, so there is one, or two when the
  training set is smaller than a batch); a third size runs eagerly;
- the batch's indices are copied into the graph's static index buffer (device to device, no sync);
- the learning rate, the other hyper-parameters, the optimizer's state objects and train/eval mode are
  part of a cheap per-step signature: a change (the plateau scheduler, a rollback, a resume) re-captures;
- the whole validation pass (every batch of the fixed validation windows) is one more graph;
- warm-up steps before the first capture run on a side stream and are undone (weights, optimizer and
  scaler state, RNG), so the graphed run starts from exactly the state the eager run would;
- any failure to capture is logged with its reason and the Trainer continues eagerly.

``backend`` is the capture mechanism: ``CudaGraphBackend`` on CUDA; tests pass a CPU stand-in that
re-runs the captured function, which exercises all of the above except the CUDA API itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

MAX_TRAIN_GRAPHS = 2  # the full batch and, for tiny training sets, the one short batch



@dataclass(frozen=True)
class StepTarget:
    """What whole-step capture needs from the loop: its eager step and validation pass, the parts they change,
    and their inputs (the loop builds it: ``Trainer.step_target``)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    grad_scaler: torch.amp.GradScaler
    device: torch.device
    windows: Tensor
    train_idx: Tensor
    val_idx: Tensor
    max_norm: float
    eager_step: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]
    val_total: Callable[[int], Tensor]


class Replayable(Protocol):
    def replay(self) -> None: ...


class Backend(Protocol):
    def warmup(self, fn: Callable[[], Any], n: int) -> None: ...
    def capture(self, fn: Callable[[], Tensor]) -> tuple[Replayable, Tensor]: ...


class CudaGraphBackend:
    """torch.cuda.graphs: warm up on a side stream, capture into a private memory pool."""

    def warmup(self, fn: Callable[[], Any], n: int) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(n):
                fn()
        torch.cuda.current_stream().wait_stream(side)

    def capture(self, fn: Callable[[], Tensor]) -> tuple[Replayable, Tensor]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
        return graph, out


@dataclass
class _Captured:
    graph: Replayable
    out: Tensor  # static outputs written by each replay
    idx: Tensor | None  # static index buffer (train graphs)
    signature: tuple
    keep: tuple = ()  # the objects whose ids are in the signature, kept alive so no id is ever reused


class StepGraphs:
    """Dispatches a StepTarget's step and validation to captured graphs; eager on any failure."""

    def __init__(self, target: StepTarget, backend: Backend | None = None, warmup_steps: int = 3):
        self.t = target
        self.backend = backend or CudaGraphBackend()
        self.warmup_steps = warmup_steps
        self.train_graphs: dict[int, _Captured] = {}
        self.val_graph: _Captured | None = None
        self.failed = ""  # why graphs are off, once they are
        self.captures = 0
        self._warm = False
        self._eager_sizes: set[int] = set()

    @property
    def active(self) -> bool:
        return not self.failed

    # -- the training step ----------------------------------------------------------------------
    def train_step(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.failed:
            return self.t.eager_step(idx)
        size = int(idx.shape[0])
        sig = self._signature()
        cap = self.train_graphs.get(size)
        if cap is None or cap.signature != sig:
            if cap is None and len(self.train_graphs) >= MAX_TRAIN_GRAPHS:
                if size not in self._eager_sizes:
                    self._eager_sizes.add(size)
                    log.info("batch size %d runs eagerly: %d step graphs exist already", size, MAX_TRAIN_GRAPHS)
                return self.t.eager_step(idx)
            cap = self._capture_train(size, sig)
            if cap is None:
                return self.t.eager_step(idx)
        if cap.idx is None:  # a train graph holds its index buffer (only the validation graph has none)
            raise RuntimeError("internal: a captured training step has no index buffer")
        cap.idx.copy_(idx, non_blocking=True)
        cap.graph.replay()
        out = cap.out.clone()  # callers may keep the result past the next replay
        return out[0], out[1], out[2]

    def _signature(self) -> tuple:
        opt, t = self.t.optimizer, self.t
        hyper = tuple((g["lr"], g["weight_decay"], g["betas"], g["eps"]) for g in opt.param_groups)
        return hyper, id(opt.state), id(opt.param_groups), t.model.training, t.max_norm

    def _capture_train(self, size: int, sig: tuple) -> _Captured | None:
        t = self.t
        idx = t.train_idx[:size].clone() if len(t.train_idx) >= size else t.train_idx[
            torch.arange(size, device=t.train_idx.device) % len(t.train_idx)]

        def body() -> Tensor:
            loss, norm, bad = t.eager_step(idx)
            return torch.stack([loss.float(), norm.float(), bad.float()])

        try:
            for g in t.optimizer.param_groups:
                g["capturable"] = True  # the fused step reads its step count on the device
            t.optimizer._warned_capturable_if_run_uncaptured = True  # eager warm-up steps are intended
            if not self._warm:
                self._undone_warmup(body)
                self._warm = True
            t.optimizer.zero_grad(set_to_none=True)
            graph, out = self.backend.capture(body)
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly, say why
            self._fail(f"capturing the training step (batch {size}) failed: {type(exc).__name__}: {exc}")
            return None
        t.optimizer.zero_grad(set_to_none=True)
        self.captures += 1
        self.train_graphs.pop(size, None)
        cap = _Captured(graph=graph, out=out, idx=idx, signature=sig,
                        keep=(t.optimizer.state, t.optimizer.param_groups))
        self.train_graphs[size] = cap
        log.info("captured the whole training step for batch %d as a CUDA graph (capture #%d)", size, self.captures)
        return cap

    def _undone_warmup(self, body: Callable[[], Tensor]) -> None:
        """Run warm-up steps (lazy state, kernel selection) and put everything back as it was."""
        t = self.t
        with _restored(t):
            self.backend.warmup(body, self.warmup_steps)

    # -- validation -------------------------------------------------------------------------------
    def val_total(self, batch_size: int) -> Tensor:
        """Sum of per-window validation losses as a device scalar (model already in eval mode, no_grad)."""
        if self.failed:
            return self.t.val_total(batch_size)
        sig = (id(self.t.val_idx), batch_size, self.t.model.training)
        cap = self.val_graph
        if cap is None or cap.signature != sig:
            cap = self._capture_val(batch_size, sig)
            if cap is None:
                return self.t.val_total(batch_size)
        cap.graph.replay()
        return cap.out.clone()

    def _capture_val(self, batch_size: int, sig: tuple) -> _Captured | None:
        t = self.t

        def body() -> Tensor:
            return t.val_total(batch_size)

        try:
            with _restored(t):  # validation changes nothing, but keep the RNG untouched too
                self.backend.warmup(body, 1)
            graph, out = self.backend.capture(body)
        except Exception as exc:  # noqa: BLE001
            self._fail(f"capturing the validation pass failed: {type(exc).__name__}: {exc}")
            return None
        self.captures += 1
        self.val_graph = _Captured(graph=graph, out=out, idx=None, signature=sig, keep=(t.val_idx,))
        return self.val_graph

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self.train_graphs.clear()
        self.val_graph = None
        self.t.optimizer.zero_grad(set_to_none=True)
        log.warning("%s; training continues eagerly (set train.accel: eager to skip the attempt)", reason)


@contextlib.contextmanager
def _restored(t: StepTarget) -> Iterator[None]:
    """Snapshot weights, optimizer state, scaler state and RNG; put them back on exit."""
    params = [p for p in t.model.parameters()]
    weights = [p.detach().clone() for p in params]
    before = {id(p): {k: v.clone() for k, v in t.optimizer.state[p].items() if isinstance(v, Tensor)}
              for p in params if p in t.optimizer.state}
    scaler = t.grad_scaler
    # GradScaler creates its _scale / _growth_tracker lazily, at the first scale(): None until then
    s, g = getattr(scaler, "_scale", None), getattr(scaler, "_growth_tracker", None)
    scale = None if s is None or g is None else (s.clone(), g.clone())  # created together
    devices = [t.device] if t.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)
        for p in params:
            saved = before.get(id(p), {})
            for k, v in t.optimizer.state.get(p, {}).items():
                if isinstance(v, Tensor) and k in saved:
                    v.copy_(saved[k])
                elif isinstance(v, Tensor):
                    v.zero_()  # created by the warm-up: a fresh AdamW state is all zeros
        s, g = getattr(scaler, "_scale", None), getattr(scaler, "_growth_tracker", None)  # the warm-up may create them
        if scaler.is_enabled() and s is not None and g is not None:
            if scale is None:
                s.fill_(scaler._init_scale)
                g.zero_()
            else:
                s.copy_(scale[0])
                g.copy_(scale[1])
    t.optimizer.zero_grad(set_to_none=True)


def attach(target: StepTarget, wanted: bool, backend: Backend | None = None) -> StepGraphs | None:
    """A StepGraphs for ``target`` when graphs are ``wanted`` (Accel.graphs, a World without collectives) and
    the data is resident; else None."""
    if not wanted:
        return None
    if target.windows.device != target.device:
        log.info("CUDA graphs off: the windows stream from host memory, so each step runs eagerly")
        return None
    if target.device.type != "cuda" and backend is None:
        return None
    return StepGraphs(target, backend)
