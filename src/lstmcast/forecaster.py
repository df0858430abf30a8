"""Forecaster: the sklearn-like facade. fit / predict / backtest / save / load.

>>> from lstmcast import Forecaster
>>> fc = Forecaster({"data": {"time_col": "date", "target": "co2", "horizon": 52,
...                           "missing": "interpolate"}})          # doctest: +SKIP
>>> fc.fit("co2.csv").predict().head()                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ForecastConfig, ModelConfig, validate_config
from .errors import DataError, NotFittedError

if TYPE_CHECKING:
    import pandas as pd

    from .data.prepare import Prepared
    from .data.validate import SeriesSet
    from .evaluation import Backtest
    from .model import LSTMForecaster
    from .training.checkpoint import Checkpoint
    from .training.loop import EpochRecord, Trainer
    from .training.skip_init import SkipFit

log = logging.getLogger(__name__)
MAX_SCALE_WINDOWS = 4096  # training windows in the intervals' calibration set
DataSource = "str | os.PathLike[str] | pd.DataFrame | None"


def load_series(source: Any, cfg: ForecastConfig) -> SeriesSet:
    """Read and validate a file path or DataFrame (``None``: the config's ``data.path``)."""
    from .data.io import read_table
    from .data.validate import SeriesSet, validate_frame

    if isinstance(source, SeriesSet):  # validated already: tuning loads once and reuses it across trials
        return source
    if source is None:
        source = cfg.data.path
    if source is None:
        raise DataError("no data given: pass a CSV/Parquet path or a DataFrame, or set data.path")
    return validate_frame(read_table(source, cfg.data.delimiter, cfg.data.id_col), cfg.data, cfg.train.precision)


class Forecaster:
    """Train an LSTM forecaster on a table of series and forecast the next ``horizon`` steps.

    ``__init__`` only stores the config; ``fit`` validates everything and returns ``self``.
    Learned state ends in ``_``: ``model_``, ``meta_``, ``scaler_``, ``history_``.
    """

    def __init__(self, config: ForecastConfig | dict[str, Any] | None = None):
        self.config = config

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, data: Any = None, *,
            callbacks: list[Callable[[Trainer, EpochRecord], None]] | None = None,
            run_dir: str | os.PathLike[str] | None = None, resume_from: Checkpoint | None = None) -> Forecaster:
        """Train on ``data``; with ``run_dir`` checkpoints go to RUN/checkpoints, ``resume_from`` continues one."""
        import torch

        from .data.prepare import prepare
        from .training.accel import resolve

        cfg = validate_config(self.config)
        cfg, dist = _distributed(cfg)  # under torchrun: this rank's place (None alone)
        # before any data is read
        accel = resolve(cfg.train.device, cfg.train.precision, cfg.train.threads, cfg.train.accel)
        _seed_everything(cfg.train.seed)
        series = load_series(data, cfg)
        prep = prepare(series, cfg.data, accel.precision)
        resolved = _resolve(cfg, prep, data)
        from .doctor import preflight

        self.doctor_ = preflight(resolved, series, prep, accel)  # the doctor's checks: refuse errors, log advice
        from .training.streaming import place_series

        tensor = place_series(torch.from_numpy(prep.scaled), accel.device)  # host memory if it cannot fit
        idx = prep.index
        train_idx, val_idx = (torch.from_numpy(i).to(tensor.device) for i in (idx.train, idx.val))
        model, trainer, skip = _train(resolved, accel, tensor, prep, train_idx, val_idx, callbacks, run_dir,
                                      resume_from, dist)
        result = trainer.fit()
        self.trainer_ = trainer
        self.config_ = resolved
        self.backtest_model_ = self.model_ = model.cpu().eval()
        self.prepared_ = prep
        self.history_ = [r.as_dict() for r in result.history]
        self.fit_result_ = result
        self.accel_ = accel = trainer.accel  # precision: auto is settled (measured) inside the Trainer
        self.refit_: dict[str, int] | None = None
        if resolved.train.refit and not result.stop_reason.startswith("interrupted"):
            self.model_, self.refit_ = _refit(resolved, accel, tensor, prep, result, skip, dist)
        from .artifacts import build_meta, build_scaler

        self.meta_ = build_meta(resolved, prep, self.model_, accel)
        self.meta_["refit"] = self.refit_  # None: model.safetensors is the backtested model itself
        self.meta_["world_size"] = dist.world if dist is not None else 1
        self.rank_ = dist.rank if dist is not None else 0
        if resolved.model.levels:
            self.meta_["intervals"] = _calibrate(resolved, self.backtest_model_, tensor, train_idx, val_idx,
                                                  prep, skip)
        self.scaler_ = build_scaler(prep)
        return self

    def _check_fitted(self, what: str) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(f"this Forecaster is not fitted yet: call .fit(data) (or lstmcast.load(run)) "
                                 f"before .{what}()")

    # -- inference ----------------------------------------------------------------------------
    def _series(self, data: Any, fast: bool = False) -> SeriesSet:
        if data is None and getattr(self, "prepared_", None) is not None:
            return self.prepared_.series
        from .fastpath import fast_series
        from .inference import load_new_series

        if fast and type(data).__name__ == "DataFrame":  # predict reads only the last window rows
            cfg = self.config_
            clean = fast_series(data, self.meta_, cfg.train.precision == "fp16" and cfg.data.scaling == "none")
            if clean is not None:
                return clean
        return load_new_series(data, self.config_, self.meta_)  # D13: says what the model needs

    def predict(self, data: Any = None) -> pd.DataFrame:
        """Forecast the next ``horizon`` steps after the end of each series, in original units.

        ``data``: a path or DataFrame with the training columns and at least ``window`` recent rows
        per series; ``None`` forecasts from the end of the training data.
        """
        self._check_fitted("predict")
        from .inference import forecast_frame

        return forecast_frame(self.model_, self._series(data, fast=True), self.meta_, self.scaler_)

    def backtest(self, data: Any = None) -> dict[str, dict[str, float]]:
        """Rolling-origin backtest over the test split; metrics for the model and both baselines."""
        self._check_fitted("backtest")
        from .inference import run_backtest

        # train.refit: the model that never saw the test split (model_ was trained on all of it)
        model = getattr(self, "backtest_model_", self.model_)
        self.backtest_: Backtest = run_backtest(model, self._series(data), self.meta_, self.scaler_, self.config_)
        return self.backtest_.metrics

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the run folder (config.yaml, model.safetensors, scaler.json, meta.json, history.json)."""
        self._check_fitted("save")
        from .artifacts import save_run

        return save_run(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Forecaster:
        from .artifacts import load_run

        return load_run(path)

    @property
    def model(self) -> LSTMForecaster:
        self._check_fitted("model")
        return self.model_

    @property
    def prepared(self) -> Prepared | None:
        return getattr(self, "prepared_", None)


def build_model(m: ModelConfig, input_size: int, n_targets: int, horizon: int, window: int) -> LSTMForecaster:
    """The LSTMForecaster a config describes, for data of ``input_size`` channels (F is never typed in)."""
    from .model import LSTMForecaster
    from .quantiles import quantiles_for

    return LSTMForecaster(input_size=input_size, n_targets=n_targets, horizon=horizon, hidden_size=m.hidden_size,
                          num_layers=m.num_layers, dropout=m.dropout, bidirectional=m.bidirectional,
                          residual=m.residual, bias=m.bias, window_norm=m.window_norm, window=window,
                          linear_skip=m.linear_skip, quantiles=quantiles_for(m.levels) if m.levels else None)


def _resolve(cfg: ForecastConfig, prep: Prepared, data: Any) -> ForecastConfig:
    """The config as trained: window, season and ``auto`` model settings as numbers, the data's path."""
    from .sizing import resolve_model

    resolved = cfg.model_copy(deep=True)
    resolved.data.window, resolved.data.season = prep.window, prep.season
    F, T = len(prep.series.channel_names), prep.series.n_targets
    resolved.model = resolve_model(cfg.model, len(prep.index.train), F, T, prep.horizon, prep.window)
    if isinstance(data, (str, os.PathLike)):
        resolved.data.path = os.path.abspath(data)
    return resolved


def _train(cfg: ForecastConfig, accel: Any, tensor: Any, prep: Prepared, train_idx: Any, val_idx: Any,
           callbacks: Any, run_dir: Any, resume_from: Any,
           dist: Any = None) -> tuple[LSTMForecaster, Trainer, SkipFit | None]:
    """Build the model (its linear skip fitted on the training windows) and the Trainer around it."""
    from .training.loop import Trainer
    from .training.skip_init import SkipFit

    T = prep.series.n_targets
    model = build_model(cfg.model, tensor.shape[1], T, prep.horizon, prep.window)
    skip = None
    if cfg.model.linear_skip and resume_from is None:
        skip = _init_skip(model, tensor, train_idx, val_idx, cfg, prep)
    elif cfg.model.linear_skip:  # resumed: the weights come from the checkpoint, the choice from its metadata
        skip = SkipFit.from_dict(resume_from.meta.get("skip"))
    model = model.to(accel.device)
    trainer = Trainer(model, cfg.train, accel, tensor, train_idx, val_idx, prep.window, prep.horizon, T,
                      callbacks=callbacks, dist=dist)
    if dist is not None and not dist.is_main:  # only rank 0 writes checkpoints; the others only read one
        if resume_from is not None:
            trainer.resume(resume_from)
    elif run_dir is not None or resume_from is not None:  # checkpoints, exact resume (training/resume.py)
        from .training.resume import attach_run

        attach_run(trainer, run_dir, resume_from, cfg.to_dict(), prep)
        if skip is not None:  # so a resumed run refits with the same choice
            trainer.context["skip"] = skip.as_dict()
    return model, trainer, skip


def _init_skip(model: LSTMForecaster, tensor: Any, train_idx: Any, val_idx: Any, cfg: ForecastConfig,
               prep: Prepared, choice: SkipFit | None = None) -> SkipFit:
    import torch

    from .training.skip_init import fit_skip

    windows = tensor.unfold(0, prep.window + prep.horizon, 1)
    fit = fit_skip(windows, train_idx, val_idx, prep.window, prep.horizon, prep.series.n_targets, prep.season,
                   cfg.train.loss, cfg.train.seed, choice)
    with torch.no_grad():
        model.skip.weight.copy_(fit.weight)
    return fit


def _refit(cfg: ForecastConfig, accel: Any, tensor: Any, prep: Prepared, first: Any,
           skip: SkipFit | None, dist: Any = None) -> tuple[LSTMForecaster, dict[str, int]]:
    """train.refit: the final model, trained on every window of the data for the steps early stopping chose.

    Same seed, same settings, on every rank when distributed; no validation split is left, so no early
    stopping: the first model's epochs up to its best one (none: the fitted linear skip alone)."""
    import torch

    from .training.loop import EpochRecord, Trainer

    epochs = [r for r in first.history if r.epoch <= first.best_epoch]
    steps = sum(r.steps for r in epochs)
    _seed_everything(cfg.train.seed)
    starts = _all_window_starts(prep)
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
    model = build_model(cfg.model, tensor.shape[1], prep.series.n_targets, prep.horizon, prep.window)
    if cfg.model.linear_skip:  # the prior and strength chosen on validation, refitted on all windows
        _init_skip(model, tensor, every, every[:0], cfg, prep, skip)
    model = model.to(accel.device)
    if steps > 0:
        trainer = Trainer(model, refit_cfg, accel, tensor, every, every[:0], prep.window, prep.horizon,
                          prep.series.n_targets, callbacks=[replay_lr], dist=dist)
        trainer.fit()
    log.info("refit on all %d windows for %d steps", len(starts), steps)
    return model.cpu().eval(), {"steps": int(steps), "windows": int(len(starts)), "rows": int(len(tensor))}


def _all_window_starts(prep: Prepared) -> np.ndarray:
    """Every complete window of every series, test split included (the refit sees all the data given);
    with ``missing: drop-windows`` only windows without a missing value, as for training."""
    from .data.windows import complete_starts, window_starts

    offsets, span = prep.index.offsets, prep.window + prep.horizon
    finite = np.isfinite(prep.scaled).all(axis=1)
    return np.concatenate([complete_starts(window_starts(0, sp.n, prep.window, prep.horizon),
                                           finite[offsets[i]:offsets[i + 1]], span) + offsets[i]
                           for i, sp in enumerate(prep.splits)])


def _distributed(cfg: ForecastConfig) -> tuple[ForecastConfig, Any]:
    """Under torchrun: join the process group, train on CPU with the cores shared among this machine's ranks,
    and in fp32 unless set (a measured precision could differ between ranks)."""
    from .training import distributed

    dist = distributed.from_env()
    if dist is not None:
        from .training.accel import available_cores

        t = cfg.train
        train = t.model_copy(update={"device": distributed.check_device(t.device),
                                     "threads": t.threads or dist.threads(available_cores()),
                                     "precision": "fp32" if t.precision == "auto" else t.precision})
        cfg = cfg.model_copy(update={"train": train})
    return cfg, dist


def _calibrate(cfg: ForecastConfig, model: LSTMForecaster, tensor: Any, train_idx: Any, val_idx: Any,
               prep: Prepared, skip: SkipFit | None = None) -> dict[str, Any]:
    """Conformal offsets of each interval level (calibration.py), never from the test split.

    The model calibrated is the one early stopping chose; the refit model (train.refit) reuses its
    offsets. The calibration windows: the validation windows and (evenly spread, at most
    MAX_SCALE_WINDOWS) the training windows, their linear skip forecast out of sample."""
    from .calibration import scaled_conformal_offsets, step_scale
    from .quantiles import intervals_meta

    levels = cfg.model.levels
    n = len(val_idx)
    if cfg.model.calibration == "none" or n == 0:
        if n == 0 and cfg.model.calibration != "none":
            log.warning("no validation windows to calibrate the prediction intervals on: they are the raw "
                        "quantiles; raise data.val_fraction to calibrate them")
        return intervals_meta(levels, "none", None, 0, False)
    pred_tr, y_tr = _training_forecasts(cfg, model, tensor, train_idx, prep, skip)
    scale = step_scale(pred_tr[..., len(levels)] - y_tr)  # (H, T): the median's error per step
    pred, y = _window_forecasts(model, tensor, val_idx, prep)
    offsets = scaled_conformal_offsets(np.concatenate([pred, pred_tr]), np.concatenate([y, y_tr]), levels, scale)
    log.info("calibrated intervals %s on %d validation and %d training windows", levels, n, len(y_tr))
    return intervals_meta(levels, "conformal", offsets, n, True, len(y_tr))


def _training_forecasts(cfg: ForecastConfig, model: LSTMForecaster, tensor: Any, train_idx: Any,
                        prep: Prepared, skip: SkipFit | None) -> tuple[Any, Any]:
    """Forecasts and actuals of the training windows for calibration, the fitted linear skip's part
    replaced by an out-of-sample one (calibration.out_of_sample_shift; windows without earlier data dropped)."""
    import torch

    pick = np.linspace(0, len(train_idx) - 1, min(len(train_idx), MAX_SCALE_WINDOWS)).astype(np.int64)
    tr = train_idx[torch.from_numpy(pick).to(train_idx.device)]  # evenly spread: the cost stays bounded
    pred, y = _window_forecasts(model, tensor, tr, prep)
    if skip is None or math.isinf(skip.lam) or not len(tr):  # no skip, or a baseline: nothing fitted
        return pred, y
    from .calibration import out_of_sample_shift

    shift, ok = out_of_sample_shift(tensor.unfold(0, prep.window + prep.horizon, 1).cpu(), tr, train_idx,
                                    prep.window, prep.horizon, prep.series.n_targets, prep.season, skip,
                                    model.skip.weight.detach().cpu(), cfg.train.loss, cfg.train.seed)
    return pred[ok] + shift[ok][..., None], y[ok]


def _window_forecasts(model: LSTMForecaster, tensor: Any, idx: Any, prep: Prepared) -> tuple[Any, Any]:
    """The model's quantile forecasts (N, H, T, Q) and the actuals (N, H, T) of windows ``idx`` (scaled)."""
    from .inference import _predict_scaled

    L, H, T = prep.window, prep.horizon, prep.series.n_targets
    if len(idx) == 0:
        return np.zeros((0, H, T, len(model.quantiles or ()))), np.zeros((0, H, T))
    windows = tensor.unfold(0, L + H, 1)[idx.to(tensor.device)].cpu()  # (N, C, L + H)
    x = windows[:, :, :L].transpose(1, 2).contiguous()  # (N, L, C)
    y = windows[:, :T, L:].transpose(1, 2).double().numpy()  # (N, H, T)
    return _predict_scaled(model, x.float().numpy()).astype(np.float64), y


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
