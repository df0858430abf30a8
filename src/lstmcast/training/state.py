"""Everything a run needs to continue exactly: ``TrainState`` (where the run stands) and ``Parts`` (what the
optimizer steps), captured together as (tensors, JSON) and restored together.

Exactness on CPU rests on three things: the batch order of an epoch is re-drawn from the generator
state saved at the epoch's start and resumed at the saved step (``EpochCursor``); the running sums
of the epoch travel with the checkpoint, so the epoch's mean loss is summed in the same order; and
every RNG (torch, numpy, Python, the batch-order generator) is restored.

State a later feature carries across steps (per-series hidden states, say) joins the checkpoint as a named
``Carried`` in ``TrainState.carried``: its tensors are saved under ``carried.<name>.`` and loaded back.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor, nn

from lstmcast import __version__
from lstmcast.errors import CheckpointError, LstmcastError
from lstmcast.training.checkpoint import CHECKPOINT_FORMAT, Checkpoint, b64, decode, encode, unb64
from lstmcast.training.records import EpochRecord

ACC = ("loss_sum", "norm_sum", "clipped", "skipped", "norm_max")  # the cursor's running sums, in order
KEEP_INTERVALS = 20  # the guard's grad-norm intervals kept for diverged.json


@dataclass
class EpochCursor:
    """Where the epoch in progress stands.

    ``acc`` (5,) on the device: sums over good steps of loss, grad norm and clipped steps, the
    number of skipped steps, and the largest grad norm since the guard's last check.
    """

    gen_state: Tensor  # batch-order generator state before this epoch's permutation was drawn
    acc: Tensor
    pos: int = 0  # the next step of the epoch
    checked_pos: int = 0  # position, skipped count and grad-norm sum at the guard's last check
    checked_skipped: int = 0
    checked_norm_sum: float = 0.0
    seconds: float = 0.0


@dataclass
class GuardRecord:
    """The non-finite guard's history: rollbacks so far, one event per rollback, grad norms per check."""

    rollbacks: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    intervals: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_INTERVALS))

    def as_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "events": self.events, "intervals": list(self.intervals)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], diverged: bool = False) -> GuardRecord:
        # resuming a diverged run is the user's cure (lower lr, ...): the rollback budget starts again
        return cls(0 if diverged else int(d.get("rollbacks", 0)), list(d.get("events", [])),
                   deque(d.get("intervals", []), maxlen=KEEP_INTERVALS))


class Carried(Protocol):
    """State carried across steps that a checkpoint must hold (issue 24's per-series hidden states)."""

    def tensors(self) -> dict[str, Tensor]: ...

    def load(self, tensors: dict[str, Tensor]) -> None: ...


@dataclass
class TrainState:
    """Where a run stands: everything a checkpoint holds besides the optimisation parts."""

    step: int = 0  # optimizer steps taken in the run, skipped ones included
    epoch: int = 0
    cursor: EpochCursor | None = None  # the epoch in progress (restored mid-epoch on resume)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_weights: dict[str, Tensor] | None = None
    bad_epochs: int = 0  # epochs without a validation improvement
    history: list[EpochRecord] = field(default_factory=list)
    stop_reason: str = ""  # set once, when the run ends
    guard: GuardRecord = field(default_factory=GuardRecord)
    carried: dict[str, Carried] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Ended by early stopping or max_epochs (an interrupted run is not)."""
        return bool(self.stop_reason) and not self.stop_reason.startswith("interrupted")


@dataclass(frozen=True)
class Parts:
    """What the optimizer steps, and the generator of the batch order."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    generator: torch.Generator

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def new_cursor(generator: torch.Generator, device: torch.device) -> EpochCursor:
    return EpochCursor(gen_state=generator.get_state(), acc=torch.zeros(len(ACC), device=device))


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    # the legacy tuple (get_state's default), which numpy's stubs type together with the dict form
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": b64(torch.get_rng_state()), "generator": b64(generator.get_state()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(generator: torch.Generator, rng: dict[str, Any]) -> None:
    torch.set_rng_state(unb64(rng["torch"]))
    generator.set_state(unb64(rng["generator"]))
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in rng and torch.cuda.is_available():
        states = [unb64(s) for s in rng["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def capture(state: TrainState, parts: Parts, precision: str, context: dict[str, Any],
            note: str = "") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The run's state now: tensors for safetensors and a JSON-able dict (``context``: config and data
    fingerprint; ``precision`` as resolved, so a resume keeps a measured choice)."""
    tensors: dict[str, Tensor] = {}
    for k, v in parts.model.state_dict().items():
        tensors[f"model.{k}"] = _host(v)
    for k, v in (state.best_weights or {}).items():
        tensors[f"best.{k}"] = _host(v)
    for name, carried in state.carried.items():
        for k, v in carried.tensors().items():
            tensors[f"carried.{name}.{k}"] = _host(v)
    cur, cursor = None, state.cursor
    if cursor is not None:
        tensors["epoch.acc"] = cursor.acc.detach().to("cpu", copy=True)
        cur = {"gen_state": b64(cursor.gen_state), "pos": cursor.pos, "checked_pos": cursor.checked_pos,
               "checked_skipped": cursor.checked_skipped, "checked_norm_sum": cursor.checked_norm_sum,
               "seconds": cursor.seconds}
    meta = {
        "format_version": CHECKPOINT_FORMAT, "lstmcast_version": __version__, "torch_version": torch.__version__,
        "step": state.step, "epoch": state.epoch, "finished": state.finished, "note": note, "cursor": cur,
        "precision": precision,
        "rng": rng_state(parts.generator),
        "optimizer": encode(parts.optimizer.state_dict(), "optimizer", tensors),
        "scheduler": encode(parts.scheduler.state_dict(), "scheduler", tensors),
        "grad_scaler": encode(parts.scaler.state_dict(), "grad_scaler", tensors),
        "early_stopping": {"best_epoch": state.best_epoch, "best_val_loss": state.best_val_loss,
                           "bad_epochs": state.bad_epochs, "has_best": state.best_weights is not None},
        "history": [r.as_dict() for r in state.history], "stop_reason": state.stop_reason,
        "guard": state.guard.as_dict(),
        **context,
    }
    meta.setdefault("config", {})
    meta.setdefault("fingerprint", {})
    return tensors, meta


def _host(v: Tensor) -> Tensor:
    return v.detach().to("cpu", copy=True).contiguous()


def restore(ckpt: Checkpoint, parts: Parts, lr: float, max_epochs: int,
            carried: dict[str, Carried] | None = None) -> TrainState:
    """Load a verified checkpoint into freshly built ``parts`` (same model and config) and return the run's
    state. ``lr``: train.lr now (``--set train.lr`` on resume replaces the saved rate); ``max_epochs`` now (a run
    that stopped at max_epochs continues when resumed with more); ``carried``: the run's carried state, loaded
    in place."""
    try:
        return _restore(ckpt, parts, lr, max_epochs, carried or {})
    except LstmcastError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this model and trainer ({exc}): it was "
                              "written by another configuration; start a new run") from None


def _restore(ckpt: Checkpoint, parts: Parts, lr: float, max_epochs: int,
             carried: dict[str, Carried]) -> TrainState:
    meta, tensors = ckpt.meta, ckpt.tensors
    dev = next(parts.model.parameters()).device
    parts.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    parts.optimizer.load_state_dict(decode(meta["optimizer"], tensors))
    parts.scheduler.load_state_dict(decode(meta["scheduler"], tensors))
    scaler_state = decode(meta.get("grad_scaler") or {}, tensors)
    if parts.scaler.is_enabled() and scaler_state:
        parts.scaler.load_state_dict(scaler_state)
    for name, c in carried.items():
        prefix = f"carried.{name}."
        c.load({k[len(prefix):]: v.to(dev) for k, v in tensors.items() if k.startswith(prefix)})
    best = {k[5:]: v.to(dev) for k, v in tensors.items() if k.startswith("best.")}
    es = meta["early_stopping"]
    names = {f.name for f in dataclasses.fields(EpochRecord)}
    cur = meta.get("cursor")
    stop_reason = str(meta.get("stop_reason", ""))
    finished = bool(meta["finished"]) and not (stop_reason.startswith("reached max_epochs") and
                                               max_epochs > meta["epoch"])
    state = TrainState(
        step=int(meta["step"]), epoch=int(meta["epoch"]),
        cursor=None if cur is None else EpochCursor(
            gen_state=unb64(cur["gen_state"]), acc=tensors["epoch.acc"].to(dev), pos=int(cur["pos"]),
            checked_pos=int(cur["checked_pos"]), checked_skipped=int(cur["checked_skipped"]),
            checked_norm_sum=float(cur["checked_norm_sum"]), seconds=float(cur["seconds"])),
        best_epoch=int(es["best_epoch"]), best_val_loss=float(es["best_val_loss"]),
        best_weights=best if es["has_best"] else None, bad_epochs=int(es["bad_epochs"]),
        history=[EpochRecord(**{k: v for k, v in r.items() if k in names}) for r in meta["history"]],
        stop_reason=stop_reason if finished else "",
        guard=GuardRecord.from_dict(meta["guard"], diverged=meta.get("note") == "diverged"),
        carried=carried)
    set_rng_state(parts.generator, meta["rng"])
    _apply_new_lr(parts, lr, meta)
    return state


def _apply_new_lr(parts: Parts, lr: float, meta: dict[str, Any]) -> None:
    """``--set train.lr=...`` on resume (the cure diverged.json suggests) replaces the saved rate."""
    old = meta.get("config", {}).get("train", {}).get("lr")
    if old is not None and old != lr:
        for g in parts.optimizer.param_groups:
            g["lr"] = lr
        parts.scheduler.load_state_dict({**parts.scheduler.state_dict(),
                                         "_last_lr": [lr] * len(parts.optimizer.param_groups)})
