"""The run's rules that both trainers follow (loop.Trainer and stateful.StatefulTrainer): when a checkpoint is
written, why the run ends, the epochs until then, what an epoch's end records and tells the callbacks, and what an
interrupted run flushes. Each is decided here once; the trainers call these with their TrainState."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from lstmcast.config import TrainConfig
    from lstmcast.training.records import EpochRecord
    from lstmcast.training.signals import StopRequest
    from lstmcast.training.state import EpochCursor, TrainState


def checkpoint_due(cfg: TrainConfig, st: TrainState, cur: EpochCursor | None, n_steps: int,
                   since_save: float) -> bool:
    """Every ``train.checkpoint_every`` steps, where a boundary on an epoch's last step waits for the epoch's
    validation and bookkeeping (``cur`` None: at the epoch's end); with 0 at an epoch's end once
    ``checkpoint_seconds`` have passed since the last save; and when the run ends."""
    boundary = bool(cfg.checkpoint_every) and st.step % cfg.checkpoint_every == 0
    if cur is not None:  # between steps
        return boundary and cur.pos < n_steps
    return boundary or bool(st.stop_reason) or (cfg.checkpoint_every == 0 and since_save >= cfg.checkpoint_seconds)


def stop_reason(cfg: TrainConfig, st: TrainState, stop: StopRequest, requested: bool, epoch_end: bool) -> str:
    """Why the run ends now ('' goes on). Between epochs (or mid-epoch after a stop request) a stop request
    or max_epochs; at an epoch's end early stopping or max_epochs."""
    if not epoch_end and requested:
        return stop.reason()
    if epoch_end and st.bad_epochs >= cfg.patience and st.step >= cfg.min_steps:
        return f"early stopping: no validation improvement for {cfg.patience} epochs"
    if st.cursor is None and st.epoch >= cfg.max_epochs:
        return f"reached max_epochs={cfg.max_epochs}"
    return ""


def record_epoch(cfg: TrainConfig, st: TrainState, rec: EpochRecord, scheduler: Any, model: nn.Module) -> None:
    """An epoch's end: its record, the plateau scheduler, and early stopping's best weights and patience count
    (the validation loss, or the training loss where there is no validation)."""
    st.history.append(rec)
    monitored = rec.val_loss if math.isfinite(rec.val_loss) else rec.train_loss
    scheduler.step(monitored)
    if monitored < st.best_val_loss - cfg.min_delta:
        st.best_val_loss, st.best_epoch = monitored, rec.epoch
        st.best_weights = copy.deepcopy(model.state_dict())
        st.bad_epochs = 0
    else:
        st.bad_epochs += 1


def flush_all(callbacks: Iterable[Any]) -> None:
    """Before an interrupted run stops: every callback with a ``flush()`` and every log handler."""
    for cb in callbacks:
        flush = getattr(cb, "flush", None)
        if callable(flush):
            flush()
    for handler in logging.getLogger().handlers:
        handler.flush()


def run_epochs(st: TrainState, stop_reason: Callable[[bool], str], run_epoch: Callable[[], EpochRecord | None],
               end_epoch: Callable[[EpochRecord], None]) -> None:
    """Epochs until a stop reason: one is asked for before each epoch (a stop request, max_epochs) and at its
    end (``end_epoch`` sets it); an epoch resumed mid-way keeps its number; one stopped before its end records
    nothing."""
    while not st.stop_reason:
        st.stop_reason = stop_reason(False)
        if st.stop_reason:
            break
        if st.cursor is None:
            st.epoch += 1
        rec = run_epoch()
        if rec is not None:
            end_epoch(rec)


def notify(callbacks: Iterable[Callable[[Any, EpochRecord], None]], view: Callable[[], Any],
           rec: EpochRecord) -> None:
    """Each callback with a read-only view of the step (built once, only when there is a callback) and the
    epoch's record."""
    callbacks = list(callbacks)
    if callbacks:
        v = view()
        for cb in callbacks:
            cb(v, rec)
