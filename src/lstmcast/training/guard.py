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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lstmcast.config import TrainConfig
from lstmcast.errors import DivergedError
from lstmcast.training.state import EpochCursor, Parts, TrainState

log = logging.getLogger(__name__)


def _finite_or_text(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


@dataclass(frozen=True)
class Reporting:
    """Where a diverged run leaves its last good state and diagnosis (None: no run folder): ``save(note)``
    checkpoints the run as it stands, ``write_report(name, obj)`` writes RUN/<name>, ``run_dir`` the folder."""

    save: Callable[[str], Path | None]
    write_report: Callable[[str, Any], Path]
    run_dir: Path


class Guard:
    """Rollback bookkeeping of one training run (checks at boundaries only, never per step): it rolls
    ``parts`` back and records into ``state.guard``."""

    def __init__(self, parts: Parts, cfg: TrainConfig, precision: str, state: TrainState,
                 reporting: Reporting | None = None):
        self.parts, self.cfg, self.precision, self.state = parts, cfg, precision, state
        self.reporting = reporting
        self._params = parts.params
        self._good: dict[str, Any] | None = None

    @property
    def rollbacks(self) -> int:
        return self.state.guard.rollbacks

    @property
    def events(self) -> list[dict[str, Any]]:
        """One per rollback (diverged.json's "rollbacks")."""
        return self.state.guard.events

    # -- the good state -----------------------------------------------------------------------
    def snapshot(self) -> None:
        p = self.parts
        self._good = {
            "step": self.state.step,
            "model": {k: v.detach().clone() for k, v in p.model.state_dict().items()},
            "optimizer": [{k: v.clone() if torch.is_tensor(v) else v for k, v in p.optimizer.state[q].items()}
                          for q in self._params],
            "scheduler": copy.deepcopy(p.scheduler.state_dict()),
            "scaler": p.scaler.state_dict() if p.scaler.is_enabled() else None,
        }

    def restore(self) -> None:
        """Copy the last good state back into the model, optimizer, scheduler and scaler, in place."""
        t, good = self.parts, self._good
        if good is None:
            return
        t.model.load_state_dict(good["model"])
        for p, saved in zip(self._params, good["optimizer"]):
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
            t.scaler.load_state_dict(good["scaler"])

    # -- checks -------------------------------------------------------------------------------
    def check(self, cur: EpochCursor, epoch_end: bool) -> bool:
        """Read the skipped-step count since the last check; roll back if too many. True if rolled back."""
        st = self.state
        loss_sum, norm_sum, _, skipped_f, norm_max = cur.acc.tolist()  # the host read
        skipped, steps = int(skipped_f), cur.pos - cur.checked_pos
        bad = skipped - cur.checked_skipped
        if steps == 0:
            return False
        cur.acc[4].zero_()
        good = steps - bad
        stats = {"step": st.step, "epoch": st.epoch, "steps": steps, "skipped": bad,
                 "mean_grad_norm": _finite_or_text((norm_sum - cur.checked_norm_sum) / good) if good else None,
                 "max_grad_norm": _finite_or_text(norm_max), "lr": self.parts.optimizer.param_groups[0]["lr"]}
        cur.checked_pos, cur.checked_skipped, cur.checked_norm_sum = cur.pos, skipped, norm_sum
        st.guard.intervals.append(stats)
        every_step_bad = epoch_end and skipped == cur.pos
        if bad >= self.cfg.max_skipped_steps or (every_step_bad and bad > 0):
            self.rollback(stats)
            return True
        return False

    def rollback(self, stats: dict[str, Any]) -> None:
        st, cfg, record = self.state, self.cfg, self.state.guard
        if record.rollbacks >= cfg.max_rollbacks:
            self.diverge(stats)
        groups = self.parts.optimizer.param_groups
        lrs = [g["lr"] for g in groups]
        self.restore()
        factor = cfg.rollback_lr_factor
        for g, lr in zip(groups, lrs):
            g["lr"] = lr * factor
        record.rollbacks += 1
        to_step = self._good["step"] if self._good else 0
        record.events.append({"step": st.step, "epoch": st.epoch, "skipped": stats["skipped"],
                              "of_steps": stats["steps"], "rolled_back_to_step": to_step, "lr_before": lrs[0],
                              "lr_after": lrs[0] * factor})
        log.warning("%d of the last %d steps had a non-finite loss or gradient (step %d): rolled back to the "
                    "state of step %d and lowered the learning rate %g -> %g (rollback %d of %d)",
                    stats["skipped"], stats["steps"], st.step, to_step, lrs[0], lrs[0] * factor, record.rollbacks,
                    cfg.max_rollbacks)
        self.snapshot()

    def diverge(self, stats: dict[str, Any]) -> None:
        """Back to the last good state, checkpoint it (best weights included), write diverged.json, raise."""
        st, cfg, out = self.state, self.cfg, self.reporting
        self.restore()
        lr = self.parts.optimizer.param_groups[0]["lr"]
        saved = out.save("diverged") if out is not None else None
        report = {
            "what": f"{stats['skipped']} of {stats['steps']} steps up to step {st.step} had a non-finite loss or "
                    f"gradient norm after {self.rollbacks} rollback(s) (train.max_rollbacks={cfg.max_rollbacks})",
            "step": st.step, "epoch": st.epoch, "lr": lr, "initial_lr": cfg.lr, "rollbacks": st.guard.events,
            "grad_norms": list(st.guard.intervals),
            "best": {"epoch": st.best_epoch if st.best_weights is not None else None,  # 0: before training
                     "val_loss": _finite_or_text(st.best_val_loss),
                     "checkpoint": str(saved) if saved else None},
            "cure": self.cures(lr),
        }
        where = ""
        if out is not None:
            path = out.write_report("diverged.json", report)
            where = f"; the last good state and the best weights are in {saved}; details in {path}"
        exc = DivergedError(f"training diverged: {report['what']}: {report['cure'][0]}{where}")
        exc.report = report  # type: ignore[attr-defined]  # an extra attribute for callers that want the details
        raise exc

    def cures(self, lr: float) -> list[str]:
        cfg = self.cfg
        cures = [f"lower the learning rate, e.g. --set train.lr={lr / 10:.3g} (it ended at {lr:.3g})"]
        if cfg.clip_norm is None:
            cures.append("turn gradient clipping on: --set train.clip_norm=1.0")
        else:
            cures.append(f"clip harder: --set train.clip_norm={cfg.clip_norm / 2:g} (now {cfg.clip_norm:g})")
        cures.append("look for spikes, extreme values or unscaled columns in the data (data.scaling: standard)")
        if self.precision in ("fp16", "bf16"):
            cures.append(f"train in fp32: --set train.precision=fp32 (now {self.precision})")
        cures.append("a smaller model.hidden_size or fewer model.num_layers")
        if self.reporting is not None:
            cures.append(f"continue from the last good checkpoint: lstmcast train --resume {self.reporting.run_dir} "
                         f"--set train.lr={lr / 10:.3g}")
        return cures
