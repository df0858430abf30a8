"""What happens after non-finite steps: roll back to the last good state with a lower learning rate,
and after ``max_rollbacks`` stop with DivergedError and a written diagnosis.

The step itself only raises a device flag (the optimizer skips the update, see loop.py). The guard
reads the running count at checks: every ``train.skip_window`` steps, before each checkpoint and
at each epoch end (one host read each). ``max_skipped_steps`` or more skipped steps since the last
check, or an epoch in which every step was skipped, trigger a rollback. The state rolled back to
is a copy taken at the last good boundary (each checkpoint and each epoch end), the same state the
last checkpoint holds; it is copied back in place, so tensors keep their addresses (CUDA graphs).
"""

from __future__ import annotations

import copy
import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import torch

from lstmcast.errors import DivergedError

if TYPE_CHECKING:
    from lstmcast.training.state import EpochCursor

log = logging.getLogger(__name__)
_KEEP_INTERVALS = 20


def _finite_or_text(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


class GuardHost(Protocol):
    """What the guard reads and restores: the training objects, the position, and how to checkpoint."""

    model: Any
    optimizer: Any
    scheduler: Any
    grad_scaler: Any
    params: list[Any]
    cfg: Any
    accel: Any
    store: Any
    step: int
    epoch: int
    cursor: Any
    result: Any
    best_state: dict[str, Any] | None

    def save_checkpoint(self, cursor: Any, note: str = "") -> Any: ...


class Guard:
    """Rollback bookkeeping of one training run (checks at boundaries only, never per step)."""

    def __init__(self, trainer: GuardHost):
        self.t = trainer
        self.rollbacks = 0
        self.events: list[dict[str, Any]] = []  # one per rollback
        self.intervals: deque[dict[str, Any]] = deque(maxlen=_KEEP_INTERVALS)  # grad norms seen, per check
        self._good: dict[str, Any] | None = None

    # -- the good state -----------------------------------------------------------------------
    def snapshot(self) -> None:
        t = self.t
        self._good = {
            "step": t.step,
            "model": {k: v.detach().clone() for k, v in t.model.state_dict().items()},
            "optimizer": [{k: v.clone() if torch.is_tensor(v) else v for k, v in t.optimizer.state[p].items()}
                          for p in t.params],
            "scheduler": copy.deepcopy(t.scheduler.state_dict()),
            "scaler": t.grad_scaler.state_dict() if t.grad_scaler.is_enabled() else None,
        }

    def restore(self) -> None:
        """Copy the last good state back into the model, optimizer, scheduler and scaler, in place."""
        t, good = self.t, self._good
        if good is None:
            return
        t.model.load_state_dict(good["model"])
        for p, saved in zip(t.params, good["optimizer"]):
            state = t.optimizer.state[p]
            for k, v in state.items():
                if torch.is_tensor(v) and k in saved:
                    v.copy_(saved[k])
                elif torch.is_tensor(v):
                    v.zero_()  # no state yet at the snapshot: Adam's initial state is all zeros
            for k, v in saved.items():
                if k not in state:
                    state[k] = v.clone() if torch.is_tensor(v) else v
        t.scheduler.load_state_dict(copy.deepcopy(good["scheduler"]))
        if good["scaler"] is not None:
            t.grad_scaler.load_state_dict(good["scaler"])

    # -- checks -------------------------------------------------------------------------------
    def check(self, cur: EpochCursor, epoch_end: bool) -> bool:
        """Read the skipped-step count since the last check; roll back if too many. True if rolled back."""
        t = self.t
        loss_sum, norm_sum, _, skipped_f, norm_max = cur.acc.tolist()  # the host read
        skipped, steps = int(skipped_f), cur.pos - cur.checked_pos
        bad = skipped - cur.checked_skipped
        if steps == 0:
            return False
        cur.acc[4].zero_()
        good = steps - bad
        stats = {"step": t.step, "epoch": t.epoch, "steps": steps, "skipped": bad,
                 "mean_grad_norm": _finite_or_text((norm_sum - cur.checked_norm_sum) / good) if good else None,
                 "max_grad_norm": _finite_or_text(norm_max), "lr": t.optimizer.param_groups[0]["lr"]}
        cur.checked_pos, cur.checked_skipped, cur.checked_norm_sum = cur.pos, skipped, norm_sum
        self.intervals.append(stats)
        every_step_bad = epoch_end and skipped == cur.pos
        if bad >= t.cfg.max_skipped_steps or (every_step_bad and bad > 0):
            self.rollback(stats)
            return True
        return False

    def rollback(self, stats: dict[str, Any]) -> None:
        t = self.t
        if self.rollbacks >= t.cfg.max_rollbacks:
            self.diverge(stats)
        lrs = [g["lr"] for g in t.optimizer.param_groups]
        self.restore()
        factor = t.cfg.rollback_lr_factor
        for g, lr in zip(t.optimizer.param_groups, lrs):
            g["lr"] = lr * factor
        self.rollbacks += 1
        to_step = self._good["step"] if self._good else 0
        self.events.append({"step": t.step, "epoch": t.epoch, "skipped": stats["skipped"], "of_steps": stats["steps"],
                            "rolled_back_to_step": to_step, "lr_before": lrs[0], "lr_after": lrs[0] * factor})
        log.warning("%d of the last %d steps had a non-finite loss or gradient (step %d): rolled back to the "
                    "state of step %d and lowered the learning rate %g -> %g (rollback %d of %d)",
                    stats["skipped"], stats["steps"], t.step, to_step, lrs[0], lrs[0] * factor, self.rollbacks,
                    t.cfg.max_rollbacks)
        self.snapshot()

    def diverge(self, stats: dict[str, Any]) -> None:
        """Back to the last good state, checkpoint it (best weights included), write diverged.json, raise."""
        t, cfg = self.t, self.t.cfg
        self.restore()
        lr = t.optimizer.param_groups[0]["lr"]
        saved = t.save_checkpoint(t.cursor, note="diverged") if t.store is not None else None
        report = {
            "what": f"{stats['skipped']} of {stats['steps']} steps up to step {t.step} had a non-finite loss or "
                    f"gradient norm after {self.rollbacks} rollback(s) (train.max_rollbacks={cfg.max_rollbacks})",
            "step": t.step, "epoch": t.epoch, "lr": lr, "initial_lr": cfg.lr, "rollbacks": self.events,
            "grad_norms": list(self.intervals),
            "best": {"epoch": t.result.best_epoch if t.best_state is not None else None,  # 0: before training
                     "val_loss": _finite_or_text(t.result.best_val_loss),
                     "checkpoint": str(saved) if saved else None},
            "cure": self.cures(lr),
        }
        where = ""
        if t.store is not None:
            path = t.store.write_report("diverged.json", report)
            where = f"; the last good state and the best weights are in {saved}; details in {path}"
        exc = DivergedError(f"training diverged: {report['what']}: {report['cure'][0]}{where}")
        exc.report = report  # type: ignore[attr-defined]
        raise exc

    def cures(self, lr: float) -> list[str]:
        t, cfg = self.t, self.t.cfg
        cures = [f"lower the learning rate, e.g. --set train.lr={lr / 10:.3g} (it ended at {lr:.3g})"]
        if cfg.clip_norm is None:
            cures.append("turn gradient clipping on: --set train.clip_norm=1.0")
        else:
            cures.append(f"clip harder: --set train.clip_norm={cfg.clip_norm / 2:g} (now {cfg.clip_norm:g})")
        cures.append("look for spikes, extreme values or unscaled columns in the data (data.scaling: standard)")
        if t.accel.precision in ("fp16", "bf16"):
            cures.append(f"train in fp32: --set train.precision=fp32 (now {t.accel.precision})")
        cures.append("a smaller model.hidden_size or fewer model.num_layers")
        if t.store is not None:
            cures.append(f"continue from the last good checkpoint: lstmcast train --resume {t.store.run_dir} "
                         f"--set train.lr={lr / 10:.3g}")
        return cures

    # -- persistence --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "events": self.events, "intervals": list(self.intervals)}

    def load_state(self, state: dict[str, Any], diverged: bool = False) -> None:
        self.events = list(state.get("events", []))
        self.intervals = deque(state.get("intervals", []), maxlen=_KEEP_INTERVALS)
        # resuming a diverged run is the user's cure (lower lr, ...): the rollback budget starts again
        self.rollbacks = 0 if diverged else int(state.get("rollbacks", 0))
