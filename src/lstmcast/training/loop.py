"""The training step and loop, top to bottom.

The step runs in canonical order: autocast forward -> loss -> scaled backward -> (all-reduce across ranks) ->
unscale -> clip -> non-finite guard -> optimizer step -> zero_grad(set_to_none=True). The guard never syncs the
host: a step whose loss or gradient norm is not finite sets the fused optimizer's ``found_inf`` flag, so the
optimizer skips it on the device (no weight, moment or step-count change), and the flag is summed in a device
counter that is read at the guard's checks only (guard.py: every ``train.skip_window`` steps, before a
checkpoint, at each epoch end), where too many skipped steps roll back to the last good state with a lower
learning rate, then stop with DivergedError.

What a Trainer holds: ``TrainData`` (the windows, built once), ``Parts`` (model, optimizer, scheduler, scaler,
generator: what a step changes), ``TrainState`` (where the run stands: what a checkpoint holds besides the parts)
and a ``World`` (one process or several ranks). Precision is settled before it is built (``build``).

Never losing work: checkpoints (checkpoint.py, state.py) every ``train.checkpoint_every`` steps (0: at each
epoch end once ``checkpoint_seconds`` have passed) and at the end, at step granularity, so a resumed run
continues exactly (``_checkpoint_due`` decides when); SIGINT/SIGTERM finish the step, checkpoint and stop
(signals.py). ``_stop_reason`` decides when the run ends. Callbacks ``(view, record)`` run at each epoch end
with a read-only ``StepView``; a callback with a ``flush()`` method is flushed before an interrupted run stops.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lstmcast.config import TrainConfig
from lstmcast.errors import InterruptedRun, ResourceError
from lstmcast.model.losses import loss_for
from lstmcast.training import graphs, precision, rules, sampling, streaming
from lstmcast.training.accel import Accel
from lstmcast.training.guard import Guard, Reporting
from lstmcast.training.records import EpochRecord, StepView, TrainData, kept_states
from lstmcast.training.signals import StopRequest, signal_name, stop_on_signals
from lstmcast.training.state import EpochCursor, Parts, TrainState, capture, new_cursor, restore
from lstmcast.training.world import Solo, World

if TYPE_CHECKING:
    from pathlib import Path

    from lstmcast.data.windows import Batch
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.checkpoint import Checkpoint, CheckpointStore

log = logging.getLogger(__name__)

Callback = Callable[[StepView, EpochRecord], None]


@dataclass(frozen=True)
class FitResult:
    """How a fit ended: its history, the best epoch (0: the starting point) and why it stopped."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    steps: int = 0
    stop_reason: str = ""


def build(model: LSTMForecaster, cfg: TrainConfig, accel: Accel, data: TrainData, world: World | None = None,
          callbacks: Sequence[Callback] = ()) -> Trainer:
    """A Trainer, with ``precision: auto`` settled first (the one place it is: a short measured probe that
    trains Trainers of its own on copies of the model; see precision.py)."""
    accel = precision.settle(accel, model, cfg, data, make_trainer=Trainer)
    return Trainer(model, cfg, accel, data, world, callbacks)


class Trainer:
    """Fits ``model`` on ``data``'s windows on ``accel``'s device, at ``accel``'s (settled) precision."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, accel: Accel, data: TrainData,
                 world: World | None = None, callbacks: Sequence[Callback] = ()):
        if accel.pending:
            raise ValueError("precision auto is settled before a Trainer is built: use loop.build")
        self.model, self.cfg, self.accel, self.data = model, cfg, accel, data
        self.world = world or Solo()
        self.world.broadcast_model(model)
        self.callbacks = list(callbacks)
        dev = accel.device
        self.gather_batch = streaming.make_gather(data.windows, dev, data.roles, data.statics)  # idx -> Batch
        self.loss_fn = loss_for(model, cfg.loss, dev)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.parts = Parts(
            model, self.optimizer,
            torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.5, patience=max(2, cfg.patience // 3)),
            torch.amp.GradScaler(dev.type, enabled=accel.precision == "fp16"),
            torch.Generator(device=data.train_idx.device).manual_seed(cfg.seed))  # the host when batches stream
        self.params = self.parts.params
        self.max_norm = cfg.clip_norm if cfg.clip_norm else math.inf
        self._zero = torch.zeros((), device=dev)
        self._n_train = self.world.count(len(data.train_idx))  # sharded: every rank's, so the ranks' steps agree
        self._n_val = self.world.count(len(data.val_idx))
        self.state = TrainState()
        self.stop = StopRequest()
        self._stop_agreed = False  # several ranks: a stop any rank asked for, as of the last step's all-reduce
        self.store: CheckpointStore | None = None
        self.context: dict[str, Any] = {}  # config and data fingerprint, stored in every checkpoint
        self._last_save = time.monotonic()
        self._next_event = 0
        self.guard = self._make_guard()
        self._graphs = graphs.attach(self.step_target(), accel.graphs and self.world.graphable)  # None: eager

    def _make_guard(self) -> Guard:
        store = self.store
        reporting = None if store is None else Reporting(
            lambda note: self.save_checkpoint(note), store.write_report, store.run_dir)
        return Guard(self.parts, self.cfg, self.accel.precision, self.state, reporting)

    def step_target(self) -> graphs.StepTarget:
        """What whole-step CUDA graphs capture and replay: this Trainer's eager step and validation pass."""
        return graphs.StepTarget(self.model, self.optimizer, self.parts.scaler, self.accel.device, self.data.windows,
                                 self.data.train_idx, self.data.val_idx, self.max_norm, self.eager_step,
                                 self.val_total)

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
        idx, weight = self.world.shard(idx, self.cfg.batch_size)  # this rank's windows, weighing b_r / B
        loss = self.forward_loss(self.gather_batch(idx))
        if weight != 1.0:
            loss = loss * weight
        scaler = self.parts.scaler
        scaler.scale(loss).backward()
        # several ranks: the batch's gradients and loss on every rank, and a stop any rank saw
        loss, self._stop_agreed = self.world.step(self.params, loss, self.stop.requested)
        scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=True)
        bad = (~(torch.isfinite(loss) & torch.isfinite(norm))).float()
        if scaler.is_enabled():
            scaler.step(self.optimizer)  # fp16: the scaler owns found_inf
            scaler.update()
        else:
            # fused AdamW reads found_inf, an attribute its caller sets (as torch's GradScaler does), untyped
            self.optimizer.found_inf = bad  # type: ignore[attr-defined]  # skips the whole update where bad == 1
            self.optimizer.step()
            del self.optimizer.found_inf  # type: ignore[attr-defined]
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), norm.detach(), bad

    # -- an epoch -----------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        """One pass over the training windows (or ``train.windows_per_epoch`` of them), but at least
        ``train.min_epoch_steps`` (windows re-drawn)."""
        n, B = self._epoch_windows(), self.cfg.batch_size
        n_steps = max(1, n // B, self.cfg.min_epoch_steps)
        return min(n_steps, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else n_steps

    def _epoch_windows(self) -> int:
        n, per = self._n_train, self.cfg.windows_per_epoch
        return min(n, per) if per else n

    def _epoch_order(self, n_steps: int) -> Tensor:
        """The epoch's batch order: as many draws of the epoch's windows (all of them: permutations) as
        its steps need (sharded: this rank's share of the epoch from its own windows)."""
        n = len(self.data.train_idx)
        k, B, gen = self.world.epoch_draw(self._epoch_windows(), n, self._n_train, self.cfg.batch_size,
                                          self.parts.generator, self.cfg.seed, self.state.epoch)
        reps = max(1, -(-n_steps * B // k))
        orders = [sampling.draw(n, k, gen) for _ in range(reps)]
        return self.data.train_idx[orders[0] if reps == 1 else torch.cat(orders)]

    def run_epoch(self) -> EpochRecord | None:
        """One epoch, or the rest of one resumed mid-way; None when stopped before its end."""
        st, gen = self.state, self.parts.generator
        B = self.world.local_batch(self.cfg.batch_size)
        self.model.train()
        t0 = time.perf_counter()
        cur = st.cursor = st.cursor or new_cursor(gen, self.accel.device)
        gen.set_state(cur.gen_state)  # a resumed epoch re-draws the same order
        n_steps = self.steps_per_epoch()
        perm = self._epoch_order(n_steps)
        sums, skipped, norm_max = cur.acc[:3], cur.acc[3], cur.acc[4]
        for s in range(cur.pos, n_steps):
            if self._stop_requested():
                cur.seconds += time.perf_counter() - t0
                return None
            loss, norm, bad = self.train_step(perm[s * B:(s + 1) * B])
            row = torch.stack((loss, norm, norm.gt(self.max_norm).float()))
            sums.add_(row.nan_to_num_(0.0, 0.0, 0.0).mul_(1.0 - bad))  # good steps only
            skipped.add_(bad)
            torch.fmax(norm_max, norm, out=norm_max)
            st.step += 1
            cur.pos = s + 1
            if st.step >= self._next_event:  # guard check and/or checkpoint: a few per epoch at most
                self._step_event(cur, n_steps)
        self.guard.check(cur, epoch_end=True)
        st.cursor = None  # the next call starts a new epoch
        return self._epoch_record(cur, n_steps, t0)

    def _stop_requested(self) -> bool:
        # several ranks stop at the same step: a signal seen by one is acted on after the next all-reduce
        return self.world.stop_now(self.stop.requested, self._stop_agreed)

    def _epoch_record(self, cur: EpochCursor, n_steps: int, t0: float) -> EpochRecord:
        loss_sum, norm_sum, clipped, skipped, _ = cur.acc.tolist()  # the epoch's host read
        n_skipped = int(skipped)
        n_good = max(1, n_steps - n_skipped)
        val = self.validate()
        seconds = cur.seconds + time.perf_counter() - t0
        return EpochRecord(
            epoch=self.state.epoch, train_loss=loss_sum / n_good, val_loss=val,
            lr=self.optimizer.param_groups[0]["lr"], grad_norm=norm_sum / n_good, clipped_fraction=clipped / n_good,
            skipped_steps=n_skipped, steps=n_steps, seconds=seconds,
            samples_per_s=n_steps * self.cfg.batch_size / max(seconds, 1e-9), rollbacks=self.guard.rollbacks)

    def _step_event(self, cur: EpochCursor, n_steps: int) -> None:
        rolled_back = self.guard.check(cur, epoch_end=False)
        if not rolled_back and self._checkpoint_due(cur, n_steps):
            self.save_checkpoint()
            self.guard.snapshot()
        self._schedule()

    def _schedule(self) -> None:
        """The next step with a guard check or a possible checkpoint."""
        every, window, step = self.cfg.checkpoint_every, self.cfg.skip_window, self.state.step
        nxt = (step // window + 1) * window
        if every and self._checkpointing:
            nxt = min(nxt, (step // every + 1) * every)
        self._next_event = nxt

    def _checkpoint_due(self, cur: EpochCursor | None, n_steps: int = 0) -> bool:
        """When a checkpoint is written: rules.checkpoint_due, where this Trainer keeps a run folder."""
        if not self._checkpointing:
            return False
        return rules.checkpoint_due(self.cfg, self.state, cur, n_steps, time.monotonic() - self._last_save)

    # -- validation ---------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, batch_size: int = 2048) -> float:
        if self._n_val == 0:
            return math.nan
        self.model.eval()
        if self._graphs is not None:
            total = self._graphs.val_total(batch_size)  # the whole pass, replayed as one graph
        else:
            total = self.val_total(batch_size)
        self.model.train()
        return float(total.item() / self._n_val)

    def val_total(self, batch_size: int) -> Tensor:
        total = self._zero.clone()
        idx = self.world.val_share(self.data.val_idx)
        for i in range(0, len(idx), batch_size):
            batch = self.gather_batch(idx[i:i + batch_size])
            total += self.forward_loss(batch) * len(batch.y)
        return self.world.total(total)

    # -- checkpoints --------------------------------------------------------------------------
    def attach_checkpoints(self, store: CheckpointStore, context: dict[str, Any]) -> None:
        """Checkpoint into ``store``; ``context`` (config, data fingerprint) goes into every checkpoint."""
        self.store, self.context = store, dict(context)
        self.guard = self._make_guard()

    @property
    def _checkpointing(self) -> bool:
        # several ranks: every rank keeps the main rank's schedule of guard snapshots, though only it writes
        return self.store is not None or self.world.lockstep

    def resume(self, ckpt: Checkpoint) -> None:
        """Continue from a verified checkpoint (same model and data; see resume.py for the checks)."""
        self.state = restore(ckpt, self.parts, self.cfg.lr, self.cfg.max_epochs, self.state.carried)
        self.guard = self._make_guard()
        log.info("resuming from %s: epoch %d, step %d", ckpt.path, self.state.epoch, self.state.step)

    def save_checkpoint(self, note: str = "") -> Path | None:
        if self.store is None:
            return None
        # a callback with a checkpoint_key (the monitor) continues from its state on resume
        kept = kept_states(self.callbacks)
        tensors, meta = capture(self.state, self.parts, self.accel.precision, {**self.context, **kept}, note)
        path = self.store.save(tensors, meta)
        self._last_save = time.monotonic()
        return path

    # -- the run ------------------------------------------------------------------------------
    def view(self) -> StepView:
        st = self.state
        return StepView(epoch=st.epoch, step=st.step, bad_epochs=st.bad_epochs, finished=st.finished,
                        steps_per_epoch=self.steps_per_epoch(), cfg=self.cfg, model=self.model, loss_fn=self.loss_fn,
                        data=self.data, gather=self.gather_batch, stop=self.stop)

    def fit(self) -> FitResult:
        """Train until early stopping, max_epochs, divergence or a stop request; the best weights win."""
        with stop_on_signals(self.stop):
            try:
                self._run()
            except torch.OutOfMemoryError as exc:
                raise self._oom_error(exc) from None
        st = self.state
        if st.best_weights is not None:
            self.model.load_state_dict(st.best_weights)
        self.model.eval()
        return FitResult(list(st.history), st.best_epoch, st.best_val_loss, st.step, st.stop_reason)

    def _run(self) -> None:
        st = self.state
        if self.store is not None:
            self.store.check_writable()
        self.guard.snapshot()
        self._schedule()
        if st.step == 0 and st.best_weights is None:
            self._validate_start()
        rules.run_epochs(st, self._stop_reason, self.run_epoch, self._end_epoch)
        if not st.finished:
            self._interrupted()

    def _stop_reason(self, epoch_end: bool) -> str:
        """Why the run ends now ('' goes on): the one place it is decided. Between epochs (or mid-epoch after a
        stop request) a stop request or max_epochs; at an epoch's end early stopping or max_epochs."""
        return rules.stop_reason(self.cfg, self.state, self.stop, self._stop_requested(), epoch_end)

    def _validate_start(self) -> None:
        """Step 0 is a candidate: a model that starts from a fitted baseline (the linear skip) keeps it
        unless training beats it on validation."""
        val = self.validate()
        if math.isfinite(val):
            self.state.best_val_loss, self.state.best_epoch = val, 0
            self.state.best_weights = copy.deepcopy(self.model.state_dict())

    def _end_epoch(self, rec: EpochRecord) -> None:
        st = self.state
        rules.record_epoch(self.cfg, st, rec, self.parts.scheduler, self.model)
        rules.notify(self.callbacks, self.view, rec)
        st.stop_reason = self._stop_reason(epoch_end=True)
        self.guard.snapshot()
        if self._checkpoint_due(None):
            self.save_checkpoint()

    def _interrupted(self) -> None:
        """A stop request between steps: checkpoint where we are, flush, and (after a signal) raise."""
        path = self.save_checkpoint()
        rules.flush_all(self.callbacks)
        if self.stop.signal is None or path is None or self.store is None:  # no store: path is None too
            return  # a caller's stop, or no run folder: stop with the weights so far (the best ones)
        st = self.state
        raise InterruptedRun(f"{signal_name(self.stop.signal)}: stopped after step {st.step} (epoch "
                             f"{st.epoch}), checkpoint written to {path}; continue with `lstmcast train --resume "
                             f"{self.store.run_dir}" + self.world.resume_hint())

    def _oom_error(self, exc: BaseException) -> ResourceError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        cfg, last = self.cfg, (self.store.names()[:1] if self.store is not None else [])
        kept = f"; the last checkpoint {last[0]} is intact (lstmcast train --resume)" if last else ""
        return ResourceError(
            f"out of memory on {self.accel.device} at step {self.state.step} with train.batch_size={cfg.batch_size}, "
            f"window {self.data.roles.window}, precision {self.accel.precision} ({str(exc).splitlines()[0][:200]}): "
            "lower train.batch_size or data.window, use a smaller model.hidden_size, or train.precision=bf16" + kept)
