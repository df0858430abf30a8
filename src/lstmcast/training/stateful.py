"""Stateful training (model.stateful, issue 24): each series' history run as consecutive chunks of
``train.tbptt_steps`` with truncated backpropagation.

The schedule: an epoch shuffles the series (from the seed) into groups of ``train.batch_size`` series; a group
runs its histories chunk by chunk, one optimizer step per chunk, the state carried from chunk to chunk and
detached between them, reset to zero where a group (each series' history) starts. Every step of a chunk is a
forecast origin: the head reads the top layer's output there and forecasts the next ``horizon`` targets (the
loss counts the origins whose horizon lies in the training split). The carried (h, c) are kept per series id
(``CarriedStore``, rows in the prepared series' order, never per batch row) on the training device, in the
model's dtype.

A checkpoint holds them (the store is the run's ``TrainState.carried["stateful"]``, saved under
``carried.stateful.`` by training/state.py), with the epoch's series order (the generator state before it was
drawn) and the position in it, so a resumed run continues exactly. Validation runs every series from zero over
its training and validation rows and scores the origins whose horizon lies in the validation split, as the
carried state will be used.

``StatefulTrainer`` holds what the window Trainer (loop.py) holds, a ``TrainState``, ``Parts`` and a ``World``
(one process only, for now), and runs the same way: checkpoints when ``_checkpoint_due`` says, the stop reason
decided in ``_stop_reason``, callbacks ``(view, record)`` with a read-only ``StepView`` (its ``carried`` holds
the carried-state norms the monitor writes). Only the step and the epoch's plan differ.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lstmcast.errors import InterruptedRun
from lstmcast.training import rules, streaming
from lstmcast.training.loop import Callback, FitResult
from lstmcast.training.records import EpochRecord, StepView, TrainData
from lstmcast.training.signals import StopRequest, signal_name, stop_on_signals
from lstmcast.training.state import EpochCursor, Parts, TrainState, capture, new_cursor, restore
from lstmcast.training.world import Solo, World

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from lstmcast.config import TrainConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.accel import Accel
    from lstmcast.training.checkpoint import Checkpoint, CheckpointStore

CARRIED = "stateful"  # the store's name in TrainState.carried (checkpoint tensors carried.stateful.h / .c)

log = logging.getLogger(__name__)


@dataclass
class ChunkSchedule:
    """Where each series' rows are in the training tensor and how many origins it has per split."""

    base: np.ndarray  # (S,) the tensor row of each series' first real row
    n_rows: np.ndarray  # (S,) real rows of each series
    train_origins: np.ndarray  # (S,) origins t whose targets t+1..t+H lie in the training split
    val_from: np.ndarray  # (S,) first origin whose horizon lies in the validation split
    val_to: np.ndarray  # (S,) one past the last such origin
    tbptt: int

    @classmethod
    def of(cls, prep: Prepared, tbptt: int) -> ChunkSchedule:
        H = prep.horizon
        offsets = np.asarray(prep.index.offsets, dtype=np.int64)
        pads = np.asarray(prep.pads if prep.pads is not None else [0] * len(prep.splits), dtype=np.int64)
        n = np.array([sp.n for sp in prep.splits], dtype=np.int64)
        train_end = np.array([sp.train_end for sp in prep.splits], dtype=np.int64)
        val_end = np.array([sp.val_end for sp in prep.splits], dtype=np.int64)
        return cls(base=offsets[:-1] + pads, n_rows=n, train_origins=np.clip(train_end - H, 0, None),
                   val_from=np.clip(train_end - 1, 0, None), val_to=np.clip(val_end - H, 0, None), tbptt=tbptt)

    def chunks(self, group: np.ndarray, upto: np.ndarray) -> int:
        return math.ceil(int(upto[group].max(initial=0)) / self.tbptt)


class CarriedStore:
    """(h, c) per series (rows in the prepared series' order), each (S, layers * D, hidden), on the device."""

    def __init__(self, n_series: int, layers_d: int, hidden: int, device: torch.device, dtype: torch.dtype):
        self.h = torch.zeros(n_series, layers_d, hidden, device=device, dtype=dtype)
        self.c = torch.zeros_like(self.h)

    def get(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        return self.h[rows].transpose(0, 1).contiguous(), self.c[rows].transpose(0, 1).contiguous()

    def put(self, rows: Tensor, state: tuple[Tensor, Tensor]) -> None:
        self.h[rows] = state[0].detach().transpose(0, 1)  # detached: the next chunk's graph starts here
        self.c[rows] = state[1].detach().transpose(0, 1)

    def reset(self, rows: Tensor) -> None:
        self.h[rows] = 0
        self.c[rows] = 0

    # -- training/state.py's Carried: what a checkpoint holds --------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        return {"h": self.h, "c": self.c}

    def load(self, tensors: dict[str, Tensor]) -> None:
        """The checkpoint's states, in place (a KeyError, reported by restore as a checkpoint that does not fit,
        where they are missing or shaped for another model or data)."""
        h, c = tensors.get("h"), tensors.get("c")
        if h is None or c is None or h.shape != self.h.shape or c.shape != self.c.shape:
            raise KeyError(f"carried states {None if h is None else tuple(h.shape)}, expected {tuple(self.h.shape)}")
        self.h.copy_(h)
        self.c.copy_(c)

    def norms(self) -> dict[str, float]:
        """Mean L2 norm of the carried h and c per series (TensorBoard's carried-state norms)."""
        return {"h": float(self.h.flatten(1).norm(dim=1).mean()), "c": float(self.c.flatten(1).norm(dim=1).mean())}


class StatefulTrainer:
    """Truncated-backpropagation training over whole series histories with carried states (module docstring)."""

    def __init__(self, model: LSTMForecaster, cfg: TrainConfig, accel: Accel, data: TrainData, prep: Prepared,
                 world: World | None = None, callbacks: Sequence[Callback] = ()):
        from lstmcast.model.losses import loss_for

        if data.series is None:
            raise ValueError("model.stateful reads whole histories: TrainData.of (with its series) builds its data")
        model.check_streamable()
        self.model, self.cfg, self.accel, self.data, self.prep = model, cfg, accel, data, prep
        self.series = data.series
        self.world = world or Solo()
        self.callbacks = list(callbacks)
        self.sched = ChunkSchedule.of(prep, cfg.tbptt_steps)
        self.H, self.T = prep.horizon, prep.series.n_targets
        self.fut = prep.roles.future_slice(self.series.shape[1])
        dev = accel.device
        self.gather_batch = streaming.make_gather(data.windows, dev, data.roles, data.statics)  # the view's gather
        self.loss_fn = loss_for(model, cfg.loss, dev)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.parts = Parts(
            model, self.optimizer,
            torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.5, patience=max(2, cfg.patience // 3)),
            torch.amp.GradScaler(dev.type, enabled=False),  # fp32 (train_first)
            torch.Generator(device="cpu").manual_seed(cfg.seed))
        D = model.num_directions
        self.carried = CarriedStore(len(prep.splits), model.num_layers * D, model.hidden_size, dev,
                                    model.head.weight.dtype)
        self.state = TrainState(carried={CARRIED: self.carried})
        self.stop = StopRequest()
        self.store: CheckpointStore | None = None
        self.context: dict[str, Any] = {}  # config and data fingerprint, stored in every checkpoint
        self._last_save = time.monotonic()

    # -- checkpoints (as loop.Trainer's) ----------------------------------------------------------------------
    def attach_checkpoints(self, store: CheckpointStore, context: dict[str, Any]) -> None:
        """Checkpoint into ``store``; ``context`` (config, data fingerprint) goes into every checkpoint."""
        self.store, self.context = store, dict(context)

    def resume(self, ckpt: Checkpoint) -> None:
        """Continue from a verified checkpoint: the parts, the run's state and the carried states (in place)."""
        self.state = restore(ckpt, self.parts, self.cfg.lr, self.cfg.max_epochs, self.state.carried)
        log.info("resuming stateful training from %s: epoch %d, step %d", ckpt.path, self.state.epoch,
                 self.state.step)

    def save_checkpoint(self, note: str = "") -> Path | None:
        if self.store is None:
            return None
        # a callback with a checkpoint_key (the monitor) continues from its state on resume
        keeping: list[Any] = [cb for cb in self.callbacks if hasattr(cb, "checkpoint_key")]
        kept = {cb.checkpoint_key: cb.state() for cb in keeping}
        tensors, meta = capture(self.state, self.parts, self.accel.precision, {**self.context, **kept}, note)
        path = self.store.save(tensors, meta)
        self._last_save = time.monotonic()
        return path

    def _checkpoint_due(self, cur: EpochCursor | None, n_steps: int = 0) -> bool:
        """loop.Trainer's rule (rules.checkpoint_due), where this trainer keeps a run folder."""
        if not self.store is not None:
            return False
        return rules.checkpoint_due(self.cfg, self.state, cur, n_steps, time.monotonic() - self._last_save)

    # -- one chunk ------------------------------------------------------------------------------------------
    def _chunk(self, rows: np.ndarray, start: int, upto: np.ndarray) -> tuple[Tensor, Tensor, Tensor | None,
                                                                               Tensor, Tensor | None]:
        """Inputs (B, n, F), targets (B, n, H, T), known future (B, n, H, K), the origins that count (B, n) and
        statics, for origins [start, start + tbptt) of the series ``rows`` (counting up to ``upto[rows]``)."""
        dev = self.series.device
        n = self.sched.tbptt
        t = start + np.arange(n)
        base, last = self.sched.base[rows], self.sched.base[rows] + self.sched.n_rows[rows] - 1
        at = np.minimum(base[:, None] + t[None, :], last[:, None])  # (B, n), clamped inside each series
        ahead = np.minimum(at[:, :, None] + 1 + np.arange(self.H), last[:, None, None])  # (B, n, H)
        x = self.series[torch.from_numpy(at).to(dev)]
        y_all = self.series[torch.from_numpy(ahead).to(dev)]
        y = y_all[..., :self.T]
        fut = y_all[..., self.fut] if self.fut is not None else None
        counted = torch.from_numpy(t[None, :] < upto[rows][:, None]).to(dev)
        return x, y, fut, counted, None  # statics: refused with model.stateful (config.py)

    def _pred(self, x: Tensor, state: tuple[Tensor, Tensor], fut: Tensor | None,
              static: Tensor | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, new = self.model.encode(x, state, static=static)
        B, n, W = out.shape
        f = fut.reshape(B * n, self.H, -1) if fut is not None else None
        s = static.repeat_interleave(n, 0) if static is not None else None
        pred = self.model.forecast_from(out.reshape(B * n, W), f, s)  # (B * n, H, T[, Q])
        return pred.view(B, n, *pred.shape[1:]), new

    def _step(self, rows: np.ndarray, start: int) -> tuple[float, float, bool]:
        x, y, fut, counted, static = self._chunk(rows, start, self.sched.train_origins)
        idx = torch.from_numpy(rows).to(self.series.device)
        pred, new = self._pred(x, self.carried.get(idx), fut, static)
        self.carried.put(idx, new)
        if not bool(counted.any()):
            return 0.0, 0.0, True
        loss = self.loss_fn(pred[counted].float(), y[counted])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.cfg.clip_norm if self.cfg.clip_norm else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return float("nan"), float("nan"), True
        self.optimizer.step()
        return float(loss.detach()), float(norm), False

    # -- epochs ---------------------------------------------------------------------------------------------
    def _plan(self) -> list[tuple[np.ndarray, int]]:
        """This epoch's (group, chunk start) steps, from the generator (a resumed epoch re-draws them)."""
        S = len(self.sched.base)
        order = torch.randperm(S, generator=self.parts.generator).numpy()
        B = max(1, min(self.cfg.batch_size, S))
        steps = []
        for g in range(0, S, B):
            group = order[g:g + B]
            group = group[self.sched.train_origins[group] > 0]
            for k in range(self.sched.chunks(group, self.sched.train_origins) if len(group) else 0):
                steps.append((group, k * self.sched.tbptt))
        return steps

    def steps_per_epoch(self) -> int:
        """The optimizer steps (chunks) of the next epoch (the progress bar's estimate; the generator is left as is)."""
        gen = self.parts.generator
        saved = gen.get_state()
        n = len(self._plan())
        gen.set_state(saved)
        return n

    def run_epoch(self) -> EpochRecord | None:
        """One epoch, or the rest of one resumed mid-way; None when stopped before its end."""
        st, gen = self.state, self.parts.generator
        self.model.train()
        t0 = time.perf_counter()
        cur = st.cursor = st.cursor or new_cursor(gen, torch.device("cpu"))
        gen.set_state(cur.gen_state)  # a resumed epoch re-draws the same plan
        plan = self._plan()
        for s in range(cur.pos, len(plan)):
            if self.stop.requested:
                cur.seconds += time.perf_counter() - t0
                return None
            group, start = plan[s]
            if start == 0:  # a series boundary: each history starts from zero
                self.carried.reset(torch.from_numpy(group).to(self.series.device))
            loss, norm, skipped = self._step(group, start)
            if skipped:
                cur.acc[3] += 1
            else:
                cur.acc[0] += loss
                cur.acc[1] += norm
                cur.acc[2] += float(self.cfg.clip_norm is not None and norm > self.cfg.clip_norm)
            st.step += 1
            cur.pos = s + 1
            if self._checkpoint_due(cur, len(plan)):
                self.save_checkpoint()
        st.cursor = None  # the next call starts a new epoch
        return self._epoch_record(cur, len(plan), t0)

    def _epoch_record(self, cur: EpochCursor, n_steps: int, t0: float) -> EpochRecord:
        loss_sum, norm_sum, clipped, skipped, _ = cur.acc.tolist()
        n_good = max(1, n_steps - int(skipped))
        val = self.validate()
        seconds = cur.seconds + time.perf_counter() - t0
        return EpochRecord(epoch=self.state.epoch, train_loss=loss_sum / n_good, val_loss=val,
                           lr=self.optimizer.param_groups[0]["lr"], grad_norm=norm_sum / n_good,
                           clipped_fraction=clipped / n_good, skipped_steps=int(skipped), steps=n_steps,
                           seconds=seconds, samples_per_s=n_steps * self.cfg.batch_size / max(seconds, 1e-9))

    @torch.no_grad()
    def validate(self) -> float:
        """Every series from zero over its training and validation rows; the loss of the origins whose horizon
        lies in the validation split (the carried state as it will be used)."""
        was = self.model.training
        self.model.eval()
        S = len(self.sched.base)
        total, count = 0.0, 0
        B = max(1, min(self.cfg.batch_size * 4, S))
        dev = self.series.device
        for g in range(0, S, B):
            rows = np.arange(g, min(S, g + B))
            rows = rows[self.sched.val_to[rows] > self.sched.val_from[rows]]
            if not len(rows):
                continue
            idx = torch.from_numpy(rows).to(dev)
            state = (torch.zeros_like(self.carried.get(idx)[0]),) * 2
            for k in range(self.sched.chunks(rows, self.sched.val_to)):
                x, y, fut, counted, static = self._chunk(rows, k * self.sched.tbptt, self.sched.val_to)
                t = k * self.sched.tbptt + torch.arange(self.sched.tbptt, device=dev)
                counted &= t[None, :] >= torch.from_numpy(self.sched.val_from[rows]).to(dev)[:, None]
                pred, state = self._pred(x, state, fut, static)
                if bool(counted.any()):
                    n = int(counted.sum())
                    total += float(self.loss_fn(pred[counted].float(), y[counted])) * n
                    count += n
        self.model.train(was)
        return total / count if count else math.inf

    # -- the run (as loop.Trainer's) ------------------------------------------------------------------------
    def view(self) -> StepView:
        st = self.state
        return StepView(epoch=st.epoch, step=st.step, bad_epochs=st.bad_epochs, finished=st.finished,
                        steps_per_epoch=self.steps_per_epoch(), cfg=self.cfg, model=self.model, loss_fn=self.loss_fn,
                        data=self.data, gather=self.gather_batch, stop=self.stop, carried=self.carried.norms())

    def fit(self) -> FitResult:
        """Train until early stopping, max_epochs or a stop request; the best weights win."""
        with stop_on_signals(self.stop):
            self._run()
        st = self.state
        if st.best_weights is not None:
            self.model.load_state_dict(st.best_weights)
        self.model.eval()
        return FitResult(list(st.history), st.best_epoch, st.best_val_loss, st.step, st.stop_reason)

    def _run(self) -> None:
        st = self.state
        if self.store is not None:
            self.store.check_writable()
        rules.run_epochs(st, self._stop_reason, self.run_epoch, self._end_epoch)
        if not st.finished:
            self._interrupted()

    def _stop_reason(self, epoch_end: bool) -> str:
        """loop.Trainer's rule: between epochs (or mid-epoch after a stop request) a stop request or max_epochs;
        at an epoch's end early stopping or max_epochs."""
        return rules.stop_reason(self.cfg, self.state, self.stop, self.stop.requested, epoch_end)

    def _end_epoch(self, rec: EpochRecord) -> None:
        st = self.state
        rules.record_epoch(self.cfg, st, rec, self.parts.scheduler, self.model)
        rules.notify(self.callbacks, self.view, rec)
        st.stop_reason = self._stop_reason(epoch_end=True)
        if self._checkpoint_due(None):
            self.save_checkpoint()

    def _interrupted(self) -> None:
        """A stop request between steps: checkpoint where we are, flush, and (after a signal) raise."""
        path = self.save_checkpoint()
        rules.flush_all(self.callbacks)
        if self.stop.signal is None or path is None or self.store is None:
            return  # a caller's stop, or no run folder: stop with the weights so far (the best ones)
        st = self.state
        raise InterruptedRun(f"{signal_name(self.stop.signal)}: stopped after step {st.step} (epoch {st.epoch}), "
                             f"checkpoint written to {path}; continue with `lstmcast train --resume "
                             f"{self.store.run_dir}" + self.world.resume_hint())


def train_first(cfg: Any, accel: Accel, data: TrainData, prep: Prepared, callbacks: Any, run_dir: Any,
                resume_from: Checkpoint | None, world: World) -> tuple[LSTMForecaster, StatefulTrainer, None]:
    """fit.train_first for model.stateful: the model and its StatefulTrainer (checkpoints as the Trainer's)."""
    import dataclasses

    from lstmcast.errors import ConfigError
    from lstmcast.model.build import build_model

    if not isinstance(world, Solo):
        raise ConfigError("model.stateful trains on one process for now: run it without torchrun")
    if accel.pending or accel.precision != "fp32":  # the chunk step runs in fp32 (no autocast here yet)
        accel = dataclasses.replace(accel, precision="fp32", reason="model.stateful trains in fp32")
    model = build_model(cfg.model, data.windows.shape[1], prep.series.n_targets, prep.horizon, prep.window,
                        **prep.inputs.model_sizes()).to(accel.device)
    trainer = StatefulTrainer(model, cfg.train, accel, data, prep, world, callbacks or ())
    if run_dir is not None or resume_from is not None:
        from lstmcast.training.resume import attach_run

        attach_run(trainer, run_dir, resume_from, cfg.to_dict(), prep)
    return model, trainer, None
