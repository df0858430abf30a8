"""How ``Forecaster.fit`` trains: the config resolved against the data, the linear skip fitted, the Trainer
built (checkpoints, resume, ranks), and the final model refitted on every window (train.refit).

The facade (forecaster.py) calls these in order; each gets the few values it needs.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.model.build import build_model

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.data.windows import Statics
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.loop import Trainer
    from lstmcast.training.skip_init import SkipFit

log = logging.getLogger("lstmcast.forecaster")  # the name users filter on for fit's messages


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_config(cfg: ForecastConfig, prep: Prepared, data: Any, n_train: int | None = None) -> ForecastConfig:
    """The config as trained: window, season and ``auto`` model settings as numbers, the data's path.
    ``n_train``: the training windows of every rank (data.shard_series), so every rank sizes the model alike."""
    from lstmcast.model.sizing import resolve_model

    resolved = cfg.model_copy(deep=True)
    resolved.data.window, resolved.data.season = prep.window, prep.season
    resolved.data.scaling = prep.scaling_kind  # auto as trained (data/prepare.py scaling_how)
    F, T = prep.scaled.shape[1], prep.series.n_targets  # every channel: values, then calendar
    n_train = len(prep.index.train) if n_train is None else n_train
    resolved.model = resolve_model(cfg.model, n_train, F, T, prep.horizon, prep.window,
                                   **prep.inputs.model_sizes())
    resolved.train.batch_size = epoch_batch(cfg.train.batch_size, n_train, cfg.train.windows_per_epoch)
    if resolved.train.batch_size < cfg.train.batch_size:
        B = resolved.train.batch_size
        log.warning("train.batch_size=%d is above the %d training windows an epoch draws: using batches of %d "
                    "(every window once per step); set train.batch_size <= %d to silence this",
                    cfg.train.batch_size, B, B, B)
    if resolved.model.stateful and resolved.train.refit:  # hook (issue 24): the refit replays window steps
        log.info("model.stateful: no refit on every row (train.refit applies to window models)")
        resolved.train.refit = False
    if isinstance(data, (str, os.PathLike)):
        resolved.data.path = os.path.abspath(data)
    return resolved


def epoch_batch(batch_size: int, n_train: int, windows_per_epoch: int | None) -> int:
    """train.batch_size, at most the windows an epoch draws: a larger batch only repeats windows, and its
    batch order (one permutation of the windows per B / n of a step) and its tensors grow with B, so
    batch_size=1e8 on 1,300 windows drew 1.5M permutations and was OOM-killed. Clamped as scikit-learn's
    MLP clamps its batch to the samples: a batch of every window once (resolve_config and the doctor say so)."""
    return min(batch_size, max(1, min(n_train, windows_per_epoch or n_train)))


def train_first(cfg: ForecastConfig, accel: Any, tensor: Any, prep: Prepared, train_idx: Any, val_idx: Any,
           callbacks: Any, run_dir: Any, resume_from: Any,
           dist: Any = None) -> tuple[LSTMForecaster, Trainer, SkipFit | None]:
    """Build the model (its linear skip fitted on the training windows) and the Trainer around it."""
    if cfg.model.stateful:  # hook (issue 24): truncated backpropagation over whole histories, own trainer
        from lstmcast.training import stateful

        return stateful.train_first(cfg, accel, tensor, prep, callbacks, run_dir, resume_from, dist)
    from lstmcast.training import precision
    from lstmcast.training.loop import Trainer
    from lstmcast.training.skip_init import SkipFit

    T = prep.series.n_targets
    model = build_model(cfg.model, tensor.shape[1], T, prep.horizon, prep.window, **prep.inputs.model_sizes())
    statics = place_statics(prep, tensor.device)
    skip = None
    if cfg.model.linear_skip and resume_from is None:
        skip = init_skip(model, tensor, train_idx, val_idx, cfg, prep, dist=dist)
    elif cfg.model.linear_skip:  # resumed: the weights come from the checkpoint, the choice from its metadata
        skip = SkipFit.from_dict(resume_from.meta.get("skip"))
    model = model.to(accel.device)
    # precision auto -> the measured choice, settled before the Trainer is built (a probe on copies of the model)
    make = functools.partial(Trainer, roles=prep.roles, statics=statics)
    accel = precision.settle(accel, model, cfg.train, tensor, train_idx, val_idx, prep.window, prep.horizon, T,
                             make_trainer=make)
    trainer = make(model, cfg.train, accel, tensor, train_idx, val_idx, prep.window, prep.horizon, T,
                   callbacks=callbacks, dist=dist)
    if dist is not None and not dist.is_main:  # only rank 0 writes checkpoints; the others only read one
        if resume_from is not None:
            trainer.resume(resume_from)
    elif run_dir is not None or resume_from is not None:  # checkpoints, exact resume (training/resume.py)
        from lstmcast.training.resume import attach_run

        attach_run(trainer, run_dir, resume_from, cfg.to_dict(), prep)
        if skip is not None:  # so a resumed run refits with the same choice
            trainer.context["skip"] = skip.as_dict()
    return model, trainer, skip


def init_skip(model: LSTMForecaster, tensor: Any, train_idx: Any, val_idx: Any, cfg: ForecastConfig,
               prep: Prepared, choice: SkipFit | None = None, dist: Any = None) -> SkipFit:
    import torch

    from lstmcast.training.skip_init import fit_skip

    windows = tensor.unfold(0, prep.window + prep.horizon, 1)
    sharded = dist is not None and dist.sharded  # each rank holds its own series: sums over the ranks
    fit = fit_skip(windows, train_idx, val_idx, prep.window, prep.horizon, prep.series.n_targets, prep.season,
                   cfg.train.loss, cfg.train.seed, choice, reduce=dist.sum_host if sharded else None,
                   shares=dist.world if sharded else 1)
    with torch.no_grad():
        model.skip.weight.copy_(fit.weight)
    return fit


def refit(cfg: ForecastConfig, accel: Any, tensor: Any, prep: Prepared, first: Any,
           skip: SkipFit | None, dist: Any = None) -> tuple[LSTMForecaster, dict[str, int]]:
    """train.refit: the final model, trained on every window of the data for the steps early stopping chose.

    Same seed, same settings, on every rank when distributed; no validation split is left, so no early
    stopping: the first model's epochs up to its best one (none: the fitted linear skip alone)."""
    import torch

    from lstmcast.training.loop import EpochRecord, Trainer

    epochs = [r for r in first.history if r.epoch <= first.best_epoch]
    steps = sum(r.steps for r in epochs)
    seed_everything(cfg.train.seed)
    starts = all_window_starts(prep)
    every = torch.from_numpy(starts).to(tensor.device)
    # the first run's epochs again: as many, of as many steps, each at the learning rate it had there (the
    # plateau schedule cannot run without validation, and one long epoch at the first rate trained worse)
    per_epoch = max(1, epochs[0].steps) if epochs else 1
    refit_cfg = cfg.train.model_copy(update={
        "max_epochs": max(1, len(epochs)), "min_epoch_steps": per_epoch, "max_steps_per_epoch": per_epoch,
        "min_steps": 0, "patience": len(epochs) + 1})
    lrs = [r.lr for r in epochs]

    def replay_lr(trainer: Trainer, rec: EpochRecord) -> None:
        if rec.epoch < len(lrs):
            for group in trainer.optimizer.param_groups:
                group["lr"] = lrs[rec.epoch]
    model = build_model(cfg.model, tensor.shape[1], prep.series.n_targets, prep.horizon, prep.window,
                        **prep.inputs.model_sizes())
    if cfg.model.linear_skip:  # the prior and strength chosen on validation, refitted on all windows
        init_skip(model, tensor, every, every[:0], cfg, prep, skip, dist=dist)
    model = model.to(accel.device)
    if steps > 0:
        trainer = Trainer(model, refit_cfg, accel, tensor, every, every[:0], prep.window, prep.horizon,
                          prep.series.n_targets, callbacks=[replay_lr], dist=dist, roles=prep.roles,
                          statics=place_statics(prep, tensor.device))
        trainer.fit()
    log.info("refit on all %d windows for %d steps", len(starts), steps)
    count = dist.count if dist is not None else int  # data.shard_series: every rank's windows and rows
    return model.cpu().eval(), {"steps": int(steps), "windows": count(len(starts)), "rows": count(len(tensor))}


def place_statics(prep: Prepared, device: Any) -> Statics | None:
    """The per-series static inputs and each row's series on the training device (None without statics)."""
    if prep.statics is None:
        return None
    import torch

    from lstmcast.data.windows import Statics

    return Statics(table=torch.from_numpy(prep.statics).to(device),
                   row_series=torch.from_numpy(prep.row_series()).to(device))


def all_window_starts(prep: Prepared) -> np.ndarray:
    """Every complete window of every series, test split included (the refit sees all the data given);
    with ``missing: drop-windows`` only windows without a missing value, as for training."""
    from lstmcast.data.windows import complete_starts, window_starts

    offsets, span = prep.index.offsets, prep.window + prep.horizon
    finite = np.isfinite(prep.scaled).all(axis=1)
    return np.concatenate([complete_starts(window_starts(prep.pad_of(i), prep.pad_of(i) + sp.n, prep.window,
                                                         prep.horizon),
                                           finite[offsets[i]:offsets[i + 1]], span) + offsets[i]
                           for i, sp in enumerate(prep.splits)])


def join_distributed(cfg: ForecastConfig) -> tuple[ForecastConfig, Any]:
    """Under torchrun: join the process group (NCCL on this rank's GPU, gloo on CPU: distributed.plan), with
    the cores shared among this machine's ranks, and in fp32 unless set (a measured precision could differ
    between ranks)."""
    from lstmcast.training import distributed

    joined = distributed.from_env(cfg.train.device)
    dist = None
    if joined is not None:
        from lstmcast.training.accel import available_cores

        dist, how = joined
        t = cfg.train
        train = t.model_copy(update={"device": how.device,
                                     "threads": t.threads or dist.threads(available_cores()),
                                     "precision": "fp32" if t.precision == "auto" else t.precision})
        cfg = cfg.model_copy(update={"train": train})
    return cfg, dist
