"""Stateful training (model.stateful, issue 24): each series' history run as consecutive chunks of
``train.tbptt_steps`` with truncated backpropagation.

The schedule: an epoch shuffles the series (from the seed) into groups of ``train.batch_size`` series; a group
runs its histories chunk by chunk, one optimizer step per chunk, the state carried from chunk to chunk and
detached between them, reset to zero where a group (each series' history) starts. Every step of a chunk is a
forecast origin: the head reads the top layer's output there and forecasts the next ``horizon`` targets (the
loss counts the origins whose horizon lies in the training split). The carried (h, c) are kept per series id
(``CarriedStore``, rows in the prepared series' order, never per batch row) on the training device, in the
model's dtype.

A checkpoint holds them (``carried_tensors`` / ``load_carried``: the hooks training/state.py calls), with the
epoch's series order (the generator state before it was drawn) and the position in it, so a resumed run
continues exactly. Validation runs every series from zero over its training and validation rows and scores the
origins whose horizon lies in the validation split, as the carried state will be used.

This module is self-contained on purpose: ``StatefulTrainer`` offers what training/state.py's StateHost and
the Forecaster use of a Trainer (fit, resume, attach_checkpoints, accel, result), not the window Trainer's
internals.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lstmcast.training.records import EpochRecord
from lstmcast.training.state import EpochCursor, capture, new_cursor, restore

if TYPE_CHECKING:
    from lstmcast.config import TrainConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.checkpoint import Checkpoint, CheckpointStore

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

    def norms(self) -> dict[str, float]:
        """Mean L2 norm of the carried h and c per series (TensorBoard's carried-state norms)."""
        return {"h": float(self.h.flatten(1).norm(dim=1).mean()), "c": float(self.c.flatten(1).norm(dim=1).mean())}


@dataclass
class StatefulResult:
    """What the Forecaster reads of a fit (the window Trainer's FitResult fields)."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    steps: int = 0
    stop_reason: str = ""


class _NoGuard:
    """The window Trainer's non-finite guard rolls back; here a non-finite chunk loss is skipped and counted."""

    rollbacks = 0

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any], diverged: bool = False) -> None:
        return None


class StatefulTrainer:
    """Truncated-backpropagation training over whole series histories with carried states (module docstring)."""

    def __init__(self, model: LSTMForecaster, cfg: TrainConfig, accel: Any, series: Tensor, prep: Prepared,
                 callbacks: list[Any] | None = None):
        from lstmcast.model.losses import loss_for

        model.check_streamable()
        self.model, self.cfg, self.accel, self.series = model, cfg, accel, series
        self.prep = prep
        self.sched = ChunkSchedule.of(prep, cfg.tbptt_steps)
        self.H, self.T = prep.horizon, prep.series.n_targets
        self.fut = prep.roles.future_slice(series.shape[1])
        dev = accel.device
        self.loss_fn = loss_for(model, cfg.loss, dev)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=0.5, patience=max(2, cfg.patience // 3))
        self.grad_scaler = torch.amp.GradScaler(dev.type, enabled=False)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(cfg.seed)
        self.guard = _NoGuard()
        self.callbacks = list(callbacks or [])
        self.result = StatefulResult()
        self.context: dict[str, Any] = {}
        self.cursor: EpochCursor | None = None
        self.epoch = self.step = self.bad_epochs = 0
        self.finished = self.stop_requested = False
        self.stop_signal: int | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.store: CheckpointStore | None = None
        D = model.num_directions
        self.carried = CarriedStore(len(prep.splits), model.num_layers * D, model.hidden_size, dev,
                                    model.head.weight.dtype)
        self._last_save = time.monotonic()

    def carried_norms(self) -> dict[str, float]:
        """The monitor's carried-state scalars (TensorBoard carried_state/h_norm, c_norm)."""
        return self.carried.norms()

    # -- the checkpoint hooks (training/state.py capture / _restore call them) --------------------------------
    def carried_tensors(self) -> dict[str, Tensor]:
        return {"carried.h": self.carried.h.detach().cpu().contiguous(),
                "carried.c": self.carried.c.detach().cpu().contiguous()}

    def load_carried(self, tensors: dict[str, Tensor]) -> None:
        h, c = tensors.get("carried.h"), tensors.get("carried.c")
        if h is None or c is None or h.shape != self.carried.h.shape or c.shape != self.carried.c.shape:
            raise KeyError(f"carried states {None if h is None else tuple(h.shape)}, expected "
                           f"{tuple(self.carried.h.shape)}")
        self.carried.h.copy_(h)
        self.carried.c.copy_(c)

    def attach_checkpoints(self, store: CheckpointStore, context: dict[str, Any]) -> None:
        self.store, self.context = store, dict(context)

    def resume(self, ckpt: Checkpoint) -> None:
        restore(self, ckpt)
        log.info("resuming stateful training from %s: epoch %d, step %d", ckpt.path, self.epoch, self.step)

    def save_checkpoint(self, cursor: EpochCursor | None, note: str = "") -> Path | None:
        if self.store is None:
            return None
        tensors, meta = capture(self, cursor, note)
        path = self.store.save(tensors, meta)
        self._last_save = time.monotonic()
        return path

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
        order = torch.randperm(S, generator=self.generator).numpy()
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
        saved = self.generator.get_state()
        n = len(self._plan())
        self.generator.set_state(saved)
        return n

    def run_epoch(self) -> EpochRecord | None:
        self.model.train()
        t0 = time.perf_counter()
        cur = self.cursor = self.cursor or new_cursor(self.generator, torch.device("cpu"))
        self.generator.set_state(cur.gen_state)
        plan = self._plan()
        for s in range(cur.pos, len(plan)):
            if self.stop_requested:
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
            self.step += 1
            cur.pos = s + 1
            if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                self.save_checkpoint(cur)
        n_good = max(1, len(plan) - int(cur.acc[3]))
        seconds = cur.seconds + time.perf_counter() - t0
        self.result.steps = self.step
        val = self.validate()
        return EpochRecord(epoch=self.epoch, train_loss=float(cur.acc[0]) / n_good, val_loss=val,
                           lr=self.optimizer.param_groups[0]["lr"], grad_norm=float(cur.acc[1]) / n_good,
                           clipped_fraction=float(cur.acc[2]) / n_good, skipped_steps=int(cur.acc[3]),
                           steps=len(plan), seconds=seconds,
                           samples_per_s=len(plan) * self.cfg.batch_size / max(seconds, 1e-9))

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

    def fit(self) -> Any:
        from lstmcast.training.signals import stop_on_signals

        with stop_on_signals(self):
            self._fit_loop()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
        return self.result

    def _fit_loop(self) -> None:
        cfg = self.cfg
        if self.store is not None:
            self.store.check_writable()
        while not self.finished:
            if self.cursor is None:
                if self.epoch >= cfg.max_epochs:
                    self.result.stop_reason = f"reached max_epochs={cfg.max_epochs}"
                    break
                self.epoch += 1
            rec = self.run_epoch()
            if rec is None:
                self.result.stop_reason = "interrupted (a signal): resume with `lstmcast train --resume`"
                self.save_checkpoint(self.cursor, note="interrupted")
                return
            self.cursor = None
            self._end_epoch(rec)

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
        if self.finished or cfg.checkpoint_every == 0 and time.monotonic() - self._last_save >= cfg.checkpoint_seconds:
            self.save_checkpoint(None)


def train_first(cfg: Any, accel: Any, tensor: Tensor, prep: Prepared, callbacks: Any, run_dir: Any,
                resume_from: Any, dist: Any = None) -> tuple[LSTMForecaster, StatefulTrainer, None]:
    """fit.train_first for model.stateful: the model and its StatefulTrainer (checkpoints as the Trainer's)."""
    from lstmcast.errors import ConfigError
    from lstmcast.model.build import build_model

    if dist is not None:
        raise ConfigError("model.stateful trains on one process for now: run it without torchrun")
    if accel.pending or accel.precision != "fp32":  # the chunk step runs in fp32 (no autocast here yet)
        import dataclasses

        accel = dataclasses.replace(accel, precision="fp32", reason="model.stateful trains in fp32")
    model = build_model(cfg.model, tensor.shape[1], prep.series.n_targets, prep.horizon, prep.window,
                        **prep.inputs.model_sizes()).to(accel.device)
    trainer = StatefulTrainer(model, cfg.train, accel, tensor, prep, callbacks)
    if run_dir is not None or resume_from is not None:
        from lstmcast.training.resume import attach_run

        attach_run(trainer, run_dir, resume_from, cfg.to_dict(), prep)
    return model, trainer, None
