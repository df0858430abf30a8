"""The training step and loop.

The step runs in canonical order: autocast forward -> loss -> scaled backward -> unscale -> clip ->
non-finite guard -> optimizer step -> zero_grad(set_to_none=True). The guard never syncs the host:
a step whose loss or gradient norm is not finite sets the fused optimizer's ``found_inf`` flag, so
the optimizer skips it on the device (no weight, moment or step-count change), and the flag is
summed in a device counter that is read once per epoch.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainConfig
from ..errors import DivergedError
from . import graphs, precision, streaming
from .accel import Accel

log = logging.getLogger(__name__)

LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": F.huber_loss,
}


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    lr: float
    grad_norm: float
    clipped_fraction: float
    skipped_steps: int
    steps: int
    seconds: float
    samples_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FitResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    steps: int = 0
    stop_reason: str = ""


class Trainer:
    """Fits a model on windows of ONE resident tensor of scaled series.

    ``series`` is (N, C) on the training device; ``train_idx``/``val_idx`` are window starts into it.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, accel: Accel, series: Tensor,
                 train_idx: Tensor, val_idx: Tensor, window: int, horizon: int, n_targets: int,
                 callbacks: list[Callable[[Trainer, EpochRecord], None]] | None = None):
        # precision: auto -> the measured choice (a short probe on copies of the model; precision.py)
        accel = precision.settle(accel, model, cfg, series, train_idx, val_idx, window, horizon, n_targets)
        self.model, self.cfg, self.accel = model, cfg, accel
        self.window, self.horizon, self.n_targets = window, horizon, n_targets
        self.windows = series.unfold(0, window + horizon, 1)  # (rows, C, L + H): a view, no copy
        # resident gather, or batches streamed from host memory when the series did not fit the device
        self._gather = streaming.make_gather(self.windows, accel.device, window, n_targets)
        self.train_idx, self.val_idx = train_idx, val_idx
        self.loss_fn = LOSSES[cfg.loss]
        self.callbacks = list(callbacks or [])
        dev = accel.device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           fused=True)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=0.5, patience=max(2, cfg.patience // 3))
        self.grad_scaler = torch.amp.GradScaler(dev.type, enabled=accel.precision == "fp16")
        self.generator = torch.Generator(device=train_idx.device)  # the host when batches stream
        self.generator.manual_seed(cfg.seed)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._max_norm = cfg.clip_norm if cfg.clip_norm else math.inf
        self._zero = torch.zeros((), device=dev)
        self.result = FitResult()
        self.epoch = 0
        self.stop_requested = False
        self._best_state: dict[str, Tensor] | None = None
        self._bad_epochs = 0
        self._graphs = graphs.attach(self)  # whole-step CUDA graphs (None: eager)

    # -- the step -----------------------------------------------------------------------------
    def _forward_loss(self, x: Tensor, y: Tensor) -> Tensor:
        dtype = self.accel.autocast_dtype
        # no autocast weight cache: it must not outlive a CUDA graph capture (each weight is cast once anyway)
        with torch.autocast(self.accel.device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False):
            pred = self.model(x)  # (B, H, T)
        return self.loss_fn(pred.float(), y)

    def train_step(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step on the windows at ``idx``; returns (loss, grad_norm, skipped) as device tensors."""
        if self._graphs is not None:
            return self._graphs.train_step(idx)  # replays the captured step (eager if capture failed)
        return self._eager_step(idx)

    def _eager_step(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, y = self._gather(idx)
        loss = self._forward_loss(x, y)
        self.grad_scaler.scale(loss).backward()
        self.grad_scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self._params, self._max_norm, foreach=True)
        bad = (~(torch.isfinite(loss) & torch.isfinite(norm))).float()
        if self.grad_scaler.is_enabled():
            self.grad_scaler.step(self.optimizer)  # fp16: the scaler owns found_inf
            self.grad_scaler.update()
        else:
            self.optimizer.found_inf = bad  # fused AdamW skips the whole update where bad == 1
            self.optimizer.step()
            del self.optimizer.found_inf
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), norm.detach(), bad

    # -- the loop -----------------------------------------------------------------------------
    def run_epoch(self) -> EpochRecord:
        cfg, dev = self.cfg, self.accel.device
        self.model.train()
        t0 = time.perf_counter()
        n = len(self.train_idx)
        perm = self.train_idx[torch.randperm(n, generator=self.generator, device=self.train_idx.device)]
        B = cfg.batch_size
        n_steps = max(1, n // B) if n >= B else 1
        if cfg.max_steps_per_epoch:
            n_steps = min(n_steps, cfg.max_steps_per_epoch)
        loss_sum, norm_sum, clipped, skipped = self._zero.clone(), self._zero.clone(), self._zero.clone(), self._zero.clone()
        for s in range(n_steps):
            if self.stop_requested:
                n_steps = s
                break
            loss, norm, bad = self.train_step(perm[s * B:(s + 1) * B])
            good = 1.0 - bad
            loss_sum += torch.nan_to_num(loss) * good
            norm_sum += torch.nan_to_num(norm) * good
            clipped += (norm > self._max_norm).float() * good
            skipped += bad
        self.result.steps += n_steps
        n_skipped = int(skipped.item())  # the one host sync of the epoch
        n_good = max(1, n_steps - n_skipped)
        val = self.validate()
        seconds = time.perf_counter() - t0
        return EpochRecord(
            epoch=self.epoch, train_loss=float(loss_sum.item() / n_good), val_loss=val,
            lr=self.optimizer.param_groups[0]["lr"], grad_norm=float(norm_sum.item() / n_good),
            clipped_fraction=float(clipped.item() / n_good), skipped_steps=n_skipped, steps=n_steps,
            seconds=seconds, samples_per_s=n_steps * B / max(seconds, 1e-9))

    @torch.no_grad()
    def validate(self, batch_size: int = 2048) -> float:
        if len(self.val_idx) == 0:
            return math.nan
        self.model.eval()
        if self._graphs is not None:
            total = self._graphs.val_total(batch_size)  # the whole pass, replayed as one graph
        else:
            total = self._val_total(batch_size)
        self.model.train()
        return float(total.item() / len(self.val_idx))

    def _val_total(self, batch_size: int) -> Tensor:
        total = self._zero.clone()
        for i in range(0, len(self.val_idx), batch_size):
            x, y = self._gather(self.val_idx[i:i + batch_size])
            total += self._forward_loss(x, y) * len(x)
        return total

    def fit(self) -> FitResult:
        cfg = self.cfg
        while self.epoch < cfg.max_epochs and not self.stop_requested:
            self.epoch += 1
            rec = self.run_epoch()
            self.result.history.append(rec)
            if rec.steps and rec.skipped_steps == rec.steps:
                raise DivergedError(
                    f"every training step of epoch {rec.epoch} had a non-finite loss or gradient: lower "
                    f"train.lr (now {rec.lr:g}), keep train.clip_norm on, or check the data for spikes")
            monitored = rec.val_loss if math.isfinite(rec.val_loss) else rec.train_loss
            self.scheduler.step(monitored)
            improved = monitored < self.result.best_val_loss - cfg.min_delta
            if improved:
                self.result.best_val_loss, self.result.best_epoch = monitored, rec.epoch
                self._best_state = copy.deepcopy(self.model.state_dict())
                self._bad_epochs = 0
            else:
                self._bad_epochs += 1
            for cb in self.callbacks:
                cb(self, rec)
            if self._bad_epochs >= cfg.patience:
                self.result.stop_reason = f"early stopping: no validation improvement for {cfg.patience} epochs"
                break
        else:
            self.result.stop_reason = "interrupted" if self.stop_requested else f"reached max_epochs={cfg.max_epochs}"
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self.model.eval()
        return self.result
