"""Everything a Trainer needs to continue exactly, as (tensors, JSON) and back.

Exactness on CPU rests on three things: the batch order of an epoch is re-drawn from the generator
state saved at the epoch's start and resumed at the saved step (``EpochCursor``); the running sums
of the epoch travel with the checkpoint, so the epoch's mean loss is summed in the same order; and
every RNG (torch, numpy, Python, the batch-order generator) is restored.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from lstmcast.errors import CheckpointError, LstmcastError
from lstmcast.training.checkpoint import CHECKPOINT_FORMAT, Checkpoint, b64, decode, encode, unb64

ACC = ("loss_sum", "norm_sum", "clipped", "skipped", "norm_max")  # the cursor's running sums, in order


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



class StateHost(Protocol):
    """Everything a checkpoint captures and restores of a training run (the whole state, by design)."""

    model: Any
    optimizer: Any
    scheduler: Any
    grad_scaler: Any
    generator: Any
    guard: Any
    accel: Any
    cfg: Any
    result: Any
    context: dict[str, Any]
    cursor: Any
    epoch: int
    step: int
    finished: bool
    best_state: dict[str, Any] | None
    bad_epochs: int

def new_cursor(generator: torch.Generator, device: torch.device) -> EpochCursor:
    return EpochCursor(gen_state=generator.get_state(), acc=torch.zeros(len(ACC), device=device))


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
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


def capture(t: StateHost, cursor: EpochCursor | None, note: str = "") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The trainer's state now: tensors for safetensors and a JSON-able dict."""
    from lstmcast import __version__

    tensors: dict[str, Tensor] = {}
    for k, v in t.model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().to("cpu", copy=True).contiguous()
    for k, v in (t.best_state or {}).items():
        tensors[f"best.{k}"] = v.detach().to("cpu", copy=True).contiguous()
    carried = getattr(t, "carried_tensors", None)  # hook (issue 24): model.stateful's per-series (h, c)
    if carried is not None:
        tensors.update(carried())
    cur = None
    if cursor is not None:
        tensors["epoch.acc"] = cursor.acc.detach().to("cpu", copy=True)
        cur = {"gen_state": b64(cursor.gen_state), "pos": cursor.pos, "checked_pos": cursor.checked_pos,
               "checked_skipped": cursor.checked_skipped, "checked_norm_sum": cursor.checked_norm_sum,
               "seconds": cursor.seconds}
    res = t.result
    meta = {
        "format_version": CHECKPOINT_FORMAT, "lstmcast_version": __version__, "torch_version": torch.__version__,
        "step": t.step, "epoch": t.epoch, "finished": t.finished, "note": note, "cursor": cur,
        "precision": t.accel.precision,  # resolved (precision: auto is measured): a resume keeps it
        "rng": rng_state(t.generator),
        "optimizer": encode(t.optimizer.state_dict(), "optimizer", tensors),
        "scheduler": encode(t.scheduler.state_dict(), "scheduler", tensors),
        "grad_scaler": encode(t.grad_scaler.state_dict(), "grad_scaler", tensors),
        "early_stopping": {"best_epoch": res.best_epoch, "best_val_loss": res.best_val_loss,
                           "bad_epochs": t.bad_epochs, "has_best": t.best_state is not None},
        "history": [r.as_dict() for r in res.history], "stop_reason": res.stop_reason,
        "guard": t.guard.state(),
        **t.context,
    }
    meta.setdefault("config", {})
    meta.setdefault("fingerprint", {})
    return tensors, meta


def restore(t: StateHost, ckpt: Checkpoint) -> None:
    """Load a verified checkpoint into a freshly built trainer (same model and config)."""
    try:
        _restore(t, ckpt)
    except LstmcastError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this model and trainer ({exc}): it was "
                              "written by another configuration; start a new run") from None


def _restore(t: StateHost, ckpt: Checkpoint) -> None:
    from lstmcast.training.records import EpochRecord

    meta, tensors, dev = ckpt.meta, ckpt.tensors, t.accel.device
    t.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    t.optimizer.load_state_dict(decode(meta["optimizer"], tensors))
    t.scheduler.load_state_dict(decode(meta["scheduler"], tensors))
    scaler_state = decode(meta.get("grad_scaler") or {}, tensors)
    if t.grad_scaler.is_enabled() and scaler_state:
        t.grad_scaler.load_state_dict(scaler_state)
    best = {k[5:]: v.to(dev) for k, v in tensors.items() if k.startswith("best.")}
    es = meta["early_stopping"]
    t.best_state = best if es["has_best"] else None
    t.bad_epochs = int(es["bad_epochs"])
    names = {f.name for f in dataclasses.fields(EpochRecord)}
    t.result.history = [EpochRecord(**{k: v for k, v in r.items() if k in names}) for r in meta["history"]]
    t.result.best_epoch, t.result.best_val_loss = int(es["best_epoch"]), float(es["best_val_loss"])
    t.result.stop_reason = str(meta.get("stop_reason", ""))
    t.step, t.epoch = int(meta["step"]), int(meta["epoch"])
    t.result.steps = t.step
    t.guard.load_state(meta["guard"], diverged=meta.get("note") == "diverged")
    set_rng_state(t.generator, meta["rng"])
    t.finished = bool(meta["finished"]) and not _more_epochs_asked(t, meta)
    cur = meta.get("cursor")
    t.cursor = None if cur is None else EpochCursor(
        gen_state=unb64(cur["gen_state"]), acc=tensors["epoch.acc"].to(dev), pos=int(cur["pos"]),
        checked_pos=int(cur["checked_pos"]), checked_skipped=int(cur["checked_skipped"]),
        checked_norm_sum=float(cur["checked_norm_sum"]), seconds=float(cur["seconds"]))
    load_carried = getattr(t, "load_carried", None)  # hook (issue 24): model.stateful's per-series (h, c)
    if load_carried is not None:
        load_carried(tensors)
    _apply_new_lr(t, meta)


def _more_epochs_asked(t: StateHost, meta: dict[str, Any]) -> bool:
    """A run that stopped at max_epochs continues when resumed with a larger max_epochs."""
    return str(meta.get("stop_reason", "")).startswith("reached max_epochs") and t.cfg.max_epochs > meta["epoch"]


def _apply_new_lr(t: StateHost, meta: dict[str, Any]) -> None:
    """``--set train.lr=...`` on resume (the cure diverged.json suggests) replaces the saved rate."""
    old = meta.get("config", {}).get("train", {}).get("lr")
    if old is not None and old != t.cfg.lr:
        for g in t.optimizer.param_groups:
            g["lr"] = t.cfg.lr
        t.scheduler.load_state_dict({**t.scheduler.state_dict(), "_last_lr": [t.cfg.lr] * len(t.optimizer.param_groups)})
