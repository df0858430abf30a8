"""The training step and loop.

The step runs in canonical order: autocast forward -> loss -> scaled backward -> unscale -> clip ->
non-finite guard -> optimizer step -> zero_grad(set_to_none=True). The guard never syncs the host:
a step whose loss or gradient norm is not finite sets the fused optimizer's ``found_inf`` flag, so
the optimizer skips it on the device (no weight, moment or step-count change), and the flag is
summed in a device counter that is read at the guard's checks only (guard.py: every
``train.skip_window`` steps, before a checkpoint, at each epoch end), where too many skipped steps
roll back to the last good state with a lower learning rate, then stop with DivergedError.

Never losing work: checkpoints (checkpoint.py, state.py) every ``train.checkpoint_every`` steps
(0: at each epoch end) and at the end, at step granularity, so a resumed run continues exactly;
SIGINT/SIGTERM finish the step, checkpoint and stop (signals.py). Callbacks ``(trainer, record)`` run
at each epoch end; a callback with a ``flush()`` method is flushed before an interrupted run stops.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lstmcast.config import TrainConfig
from lstmcast.errors import InterruptedRun, ResourceError
from lstmcast.training import graphs, precision, sampling
from lstmcast.training import streaming as streaming
from lstmcast.data.windows import Batch, Roles, Statics
from lstmcast.training.accel import Accel
from lstmcast.training.guard import Guard
from lstmcast.model.losses import LOSSES, loss_for  # noqa: F401  (LOSSES re-exported: tests swap a loss in)
from lstmcast.training.signals import signal_name, stop_on_signals
from lstmcast.training.records import EpochRecord
from lstmcast.training.state import EpochCursor, capture, new_cursor, restore

if TYPE_CHECKING:
    from pathlib import Path

    from lstmcast.training.checkpoint import Checkpoint, CheckpointStore
    from lstmcast.training.distributed import Distributed

log = logging.getLogger(__name__)

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
                 callbacks: list[Callable[[Trainer, EpochRecord], None]] | None = None,
                 dist: Distributed | None = None, roles: Roles | None = None, statics: Statics | None = None):
        roles = roles or Roles(window, horizon, n_targets)
        # fit settles precision: auto before building the Trainer; a Trainer built directly settles it here
        accel = precision.settle(accel, model, cfg, series, train_idx, val_idx, window, horizon, n_targets,
                                 make_trainer=functools.partial(type(self), roles=roles, statics=statics))
        self.model, self.cfg, self.accel = model, cfg, accel
        self.dist = dist  # several ranks (distributed.py): sharded batches, one all-reduce per step
        if dist is not None:
            dist.broadcast_model(model)
        self.window, self.horizon, self.n_targets = window, horizon, n_targets
        self.windows = series.unfold(0, window + horizon, 1)  # (rows, C, L + H): a view, no copy
        # resident gather, or batches streamed from host memory when the series did not fit the device
        self.roles, self.statics = roles, statics
        self.gather_batch = streaming.make_gather(self.windows, accel.device, roles, statics)  # idx -> Batch
        self.train_idx, self.val_idx = train_idx, val_idx
        self._n_train = len(train_idx) if dist is None else dist.count(len(train_idx))
        self.loss_fn = loss_for(model, cfg.loss, accel.device)
        self.callbacks = list(callbacks or [])
        dev = accel.device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           fused=True)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=0.5, patience=max(2, cfg.patience // 3))
        self.grad_scaler = torch.amp.GradScaler(dev.type, enabled=accel.precision == "fp16")
        self.generator = torch.Generator(device=train_idx.device)  # the host when batches stream
        self.generator.manual_seed(cfg.seed)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.max_norm = cfg.clip_norm if cfg.clip_norm else math.inf
        self._zero = torch.zeros((), device=dev)
        self.result = FitResult()
        self.epoch = 0
        self.stop_requested = False
        self._stop_agreed = False  # several ranks: a stop any rank asked for, as of the last step's all-reduce
        self.best_state: dict[str, Tensor] | None = None
        self.bad_epochs = 0
        self.step = 0  # optimizer steps taken in the run, skipped ones included
        self.stop_signal: int | None = None  # set by signals.stop_on_signals
        self.finished = False
        self.cursor: EpochCursor | None = None  # the epoch in progress (restored mid-epoch on resume)
        self.guard = Guard(self)
        self.store: CheckpointStore | None = None
        self.context: dict[str, Any] = {}  # config and data fingerprint, stored in every checkpoint
        self._next_event = 0
        self._ckpt_due = False
        self._last_save = time.monotonic()
        self._graphs = graphs.attach(self) if dist is None else None  # whole-step CUDA graphs (None: eager)

    # -- the step -----------------------------------------------------------------------------
    def forward_loss(self, b: Batch) -> Tensor:
        dtype = self.accel.autocast_dtype
        # no autocast weight cache: it must not outlive a CUDA graph capture (each weight is cast once anyway)
        with torch.autocast(self.accel.device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False):
            pred = self.model(b.past, future=b.future, static=b.static)  # (B, H, T), or (B, H, T, Q) with quantiles
        return self.loss_fn(pred.float(), b.y)

    def train_step(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step on the windows at ``idx``; returns (loss, grad_norm, skipped) as device tensors."""
        if self._graphs is not None:
            return self._graphs.train_step(idx)  # replays the captured step (eager if capture failed)
        return self.eager_step(idx)

    def eager_step(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        weight = 1.0
        if self.dist is not None:
            idx, weight = self.dist.shard(idx, self.cfg.batch_size)  # this rank's windows, weighing b_r / B
        loss = self.forward_loss(self.gather_batch(idx))
        self.grad_scaler.scale(loss * weight if weight != 1.0 else loss).backward()
        if self.dist is not None:  # the batch's gradients and loss on every rank, and a stop any rank saw
            loss, self._stop_agreed = self.dist.step(self.params, loss * weight, self.stop_requested)
        self.grad_scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=True)
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

    def _should_stop(self) -> bool:
        # several ranks stop at the same step: a signal seen by one is acted on after the next all-reduce
        return self.stop_requested if self.dist is None else self._stop_agreed

    # -- the loop -----------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        """One pass over the training windows (or ``train.windows_per_epoch`` of them), but at least
        ``train.min_epoch_steps`` (windows re-drawn)."""
        n, B = self._epoch_windows(), self.cfg.batch_size
        n_steps = max(1, n // B, self.cfg.min_epoch_steps)
        return min(n_steps, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else n_steps

    def _epoch_windows(self) -> int:
        n, per = self._n_train, self.cfg.windows_per_epoch  # sharded: every rank's windows, so steps agree
        return min(n, per) if per else n

    def _epoch_order(self, n_steps: int) -> Tensor:
        """The epoch's batch order: as many draws of the epoch's windows (all of them: permutations) as
        its steps need."""
        n, k, B, gen = len(self.train_idx), self._epoch_windows(), self.cfg.batch_size, self.generator
        if self.dist is not None and self.dist.sharded:  # this rank's share of the epoch from its own windows
            k, B = max(1, -(-k * n // self._n_train)), self.dist.local_batch(B)
            gen = torch.Generator(device=gen.device).manual_seed(self.dist.epoch_seed(self.cfg.seed, self.epoch))
        reps = max(1, -(-n_steps * B // k))
        orders = [sampling.draw(n, k, gen) for _ in range(reps)]
        return self.train_idx[orders[0] if reps == 1 else torch.cat(orders)]

    def run_epoch(self) -> EpochRecord | None:
        """One epoch, or the rest of one resumed mid-way; None when stopped before its end."""
        B = self.cfg.batch_size if self.dist is None else self.dist.local_batch(self.cfg.batch_size)
        self.model.train()
        t0 = time.perf_counter()
        cur = self.cursor = self.cursor or new_cursor(self.generator, self.accel.device)
        self.generator.set_state(cur.gen_state)  # a resumed epoch re-draws the same order
        n_steps = self.steps_per_epoch()
        perm = self._epoch_order(n_steps)
        sums, skipped, norm_max = cur.acc[:3], cur.acc[3], cur.acc[4]
        for s in range(cur.pos, n_steps):
            if self._should_stop():
                cur.seconds += time.perf_counter() - t0
                return None
            loss, norm, bad = self.train_step(perm[s * B:(s + 1) * B])
            row = torch.stack((loss, norm, norm.gt(self.max_norm).float()))
            sums.add_(row.nan_to_num_(0.0, 0.0, 0.0).mul_(1.0 - bad))  # good steps only
            skipped.add_(bad)
            torch.fmax(norm_max, norm, out=norm_max)
            self.step += 1
            cur.pos = s + 1
            if self.step >= self._next_event:  # guard check and/or checkpoint: a few per epoch at most
                self._step_event(cur, n_steps)
        self.guard.check(cur, epoch_end=True)
        self.cursor = None  # the next call starts a new epoch
        return self._epoch_record(cur, n_steps, t0)

    def _epoch_record(self, cur: EpochCursor, n_steps: int, t0: float) -> EpochRecord:
        loss_sum, norm_sum, clipped, skipped, _ = cur.acc.tolist()  # the epoch's host read
        n_skipped = int(skipped)
        n_good = max(1, n_steps - n_skipped)
        self.result.steps = self.step
        val = self.validate()
        seconds = cur.seconds + time.perf_counter() - t0
        return EpochRecord(
            epoch=self.epoch, train_loss=loss_sum / n_good, val_loss=val, lr=self.optimizer.param_groups[0]["lr"],
            grad_norm=norm_sum / n_good, clipped_fraction=clipped / n_good, skipped_steps=n_skipped,
            steps=n_steps, seconds=seconds, samples_per_s=n_steps * self.cfg.batch_size / max(seconds, 1e-9),
            rollbacks=self.guard.rollbacks)

    def _schedule(self) -> None:
        every, window = self.cfg.checkpoint_every, self.cfg.skip_window
        nxt = (self.step // window + 1) * window
        if every and self._checkpoints:
            nxt = min(nxt, (self.step // every + 1) * every)
        self._next_event = nxt

    @property
    def _checkpoints(self) -> bool:
        # every rank keeps rank 0's schedule of guard checks and snapshots, though only rank 0 writes
        return self.store is not None or self.dist is not None

    def _step_event(self, cur: EpochCursor, n_steps: int) -> None:
        every = self.cfg.checkpoint_every
        due = bool(every) and self._checkpoints and self.step % every == 0
        rolled_back = self.guard.check(cur, epoch_end=False)
        if due and not rolled_back:
            if cur.pos < n_steps:
                self.save_checkpoint(cur)
                self.guard.snapshot()
            else:  # the epoch's last step: checkpoint after its validation and bookkeeping
                self._ckpt_due = True
        self._schedule()

    @torch.no_grad()
    def validate(self, batch_size: int = 2048) -> float:
        n = len(self.val_idx) if self.dist is None else self.dist.count(len(self.val_idx))
        if n == 0:
            return math.nan
        self.model.eval()
        if self._graphs is not None:
            total = self._graphs.val_total(batch_size)  # the whole pass, replayed as one graph
        else:
            total = self.val_total(batch_size)
        self.model.train()
        return float(total.item() / n)

    def val_total(self, batch_size: int) -> Tensor:
        total = self._zero.clone()
        idx = self.val_idx if self.dist is None else self.dist.val_share(self.val_idx)
        for i in range(0, len(idx), batch_size):
            batch = self.gather_batch(idx[i:i + batch_size])
            total += self.forward_loss(batch) * len(batch.y)
        return total if self.dist is None else self.dist.total(total)

    # -- fitting, checkpoints, interruption ---------------------------------------------------
    def attach_checkpoints(self, store: CheckpointStore, context: dict[str, Any]) -> None:
        """Checkpoint into ``store``; ``context`` (config, data fingerprint) goes into every checkpoint."""
        self.store, self.context = store, dict(context)

    def resume(self, ckpt: Checkpoint) -> None:
        """Continue from a verified checkpoint (same model and data; see resume.py for the checks)."""
        restore(self, ckpt)
        log.info("resuming from %s: epoch %d, step %d", ckpt.path, self.epoch, self.step)

    def save_checkpoint(self, cursor: EpochCursor | None, note: str = "") -> Path | None:
        if self.store is None:
            return None
        tensors, meta = capture(self, cursor, note)
        path = self.store.save(tensors, meta)
        self._last_save = time.monotonic()
        return path

    def fit(self) -> FitResult:
        """Train until early stopping, max_epochs, divergence or a stop request; the best weights win."""
        with stop_on_signals(self):
            try:
                self._fit_loop()
            except torch.OutOfMemoryError as exc:
                raise self._oom_error(exc) from None
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
        return self.result

    def _fit_loop(self) -> None:
        cfg = self.cfg
        if self.store is not None:
            self.store.check_writable()
        self.guard.snapshot()
        self._schedule()
        if self.step == 0 and self.best_state is None:
            self._validate_start()
        while not self.finished:
            if self._should_stop():
                self._stop(None)
                return
            if self.cursor is None:
                if self.epoch >= cfg.max_epochs:
                    self.result.stop_reason = f"reached max_epochs={cfg.max_epochs}"
                    break
                self.epoch += 1
            rec = self.run_epoch()
            if rec is None:
                self._stop(self.cursor)
                return
            self.cursor = None
            self._end_epoch(rec)

    def _validate_start(self) -> None:
        """Step 0 is a candidate: a model that starts from a fitted baseline (the linear skip) keeps it
        unless training beats it on validation."""
        val = self.validate()
        if math.isfinite(val):
            self.result.best_val_loss, self.result.best_epoch = val, 0
            self.best_state = copy.deepcopy(self.model.state_dict())

    def _end_epoch(self, rec: EpochRecord) -> None:
        cfg = self.cfg
        self.result.history.append(rec)
        monitored = rec.val_loss if math.isfinite(rec.val_loss) else rec.train_loss
        self.scheduler.step(monitored)
        if monitored < self.result.best_val_loss - cfg.min_delta:
            self.result.best_val_loss, self.result.best_epoch = monitored, rec.epoch
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        for cb in self.callbacks:
            cb(self, rec)
        if self.bad_epochs >= cfg.patience and self.step >= cfg.min_steps:
            self.result.stop_reason = f"early stopping: no validation improvement for {cfg.patience} epochs"
            self.finished = True
        elif self.epoch >= cfg.max_epochs:
            self.result.stop_reason = f"reached max_epochs={cfg.max_epochs}"
            self.finished = True
        self.guard.snapshot()
        if self._ckpt_due or self.finished or (
                cfg.checkpoint_every == 0 and time.monotonic() - self._last_save >= cfg.checkpoint_seconds):
            self.save_checkpoint(None)
            self._ckpt_due = False

    def _stop(self, cursor: EpochCursor | None) -> None:
        """A stop request (signal or caller) between steps: checkpoint where we are, flush, report."""
        path = self.save_checkpoint(cursor)
        for cb in self.callbacks:
            flush = getattr(cb, "flush", None)
            if callable(flush):
                flush()
        for handler in logging.getLogger().handlers:
            handler.flush()
        if self.stop_signal is None:
            self.result.stop_reason = "interrupted"
            return
        name = signal_name(self.stop_signal)
        self.result.stop_reason = f"interrupted by {name}"
        if path is None:
            return  # no run folder: stop with the weights so far (the best ones), nothing to resume from
        raise InterruptedRun(f"{name}: stopped after step {self.step} (epoch {self.epoch}), checkpoint written "
                             f"to {path}; continue with `lstmcast train --resume {self.store.run_dir}"
                             + _ranks_hint(self.dist))

    def _oom_error(self, exc: BaseException) -> ResourceError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        cfg, last = self.cfg, (self.store.names()[:1] if self.store is not None else [])
        kept = f"; the last checkpoint {last[0]} is intact (lstmcast train --resume)" if last else ""
        return ResourceError(
            f"out of memory on {self.accel.device} at step {self.step} with train.batch_size={cfg.batch_size}, "
            f"window {self.window}, precision {self.accel.precision} ({str(exc).splitlines()[0][:200]}): lower "
            "train.batch_size or data.window, use a smaller model.hidden_size, or train.precision=bf16" + kept)


def _ranks_hint(dist: Distributed | None) -> str:
    """The end of the resume command: the same ranks (--resume continues exactly only with the same world size)."""
    if dist is None:
        return "`"
    if dist.world == dist.local_world:
        return f" --nproc {dist.world}`"
    return f"` under the same torchrun command on every machine ({dist.world} ranks)"
