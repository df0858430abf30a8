"""Calibrating a fitted quantile model's intervals (``model.levels``) on windows it was not fitted to.

The maths is in calibration.py; this module runs the model on the validation and training windows.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.data.windows import split_window
from lstmcast.inference.calibration import (
    choose_method,
    out_of_sample_shift,
    residual_offsets,
    scaled_conformal_offsets,
    step_scale,
)
from lstmcast.inference.predict import _predict_scaled
from lstmcast.model.quantiles import intervals_meta

if TYPE_CHECKING:
    from torch import Tensor

    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.skip_init import SkipFit

log = logging.getLogger("lstmcast.forecaster")
MAX_SCALE_WINDOWS = 4096  # training windows in the intervals' calibration set


def calibrate(cfg: ForecastConfig, model: LSTMForecaster, tensor: Tensor, train_idx: Tensor, val_idx: Tensor,
               prep: Prepared, skip: SkipFit | None = None) -> dict[str, Any]:
    """Conformal offsets of each interval level (calibration.py), never from the test split.

    The model calibrated is the one early stopping chose; the refit model (train.refit) reuses its
    offsets. The calibration windows: the validation windows and (evenly spread, at most
    MAX_SCALE_WINDOWS) the training windows, their linear skip forecast out of sample. model.interval_method
    auto keeps the method (quantile or residual) with the lower interval score on them."""
    levels = cfg.model.levels
    n = len(val_idx)
    if cfg.model.calibration == "none" or n == 0:
        if n == 0 and cfg.model.calibration != "none":
            log.warning("no validation windows to calibrate the prediction intervals on: they are the raw "
                        "quantiles; raise data.val_fraction to calibrate them")
        return intervals_meta(levels, "none", None, 0, False)  # the raw learned quantiles
    pred_tr, y_tr = training_forecasts(cfg, model, tensor, train_idx, prep, skip)
    scale = step_scale(pred_tr[..., len(levels)] - y_tr)  # (H, T): the median's error per step
    pred, y = window_forecasts(model, tensor, val_idx, prep)
    pred, y = np.concatenate([pred, pred_tr]), np.concatenate([y, y_tr])
    offsets = {"quantile": scaled_conformal_offsets(pred, y, levels, scale),
               "residual": residual_offsets(pred[..., len(levels)], y, levels, scale)}
    method, scores = cfg.model.interval_method, None
    if method == "auto":
        method, scores = choose_method(pred, y, levels, offsets)
    log.info("calibrated %s intervals %s on %d validation and %d training windows%s", method, levels, n,
             len(y_tr), f" (interval scores {scores})" if scores else "")
    return intervals_meta(levels, "conformal", offsets[method], n, True, len(y_tr), method, scores)


def training_forecasts(cfg: ForecastConfig, model: LSTMForecaster, tensor: Tensor, train_idx: Tensor,
                        prep: Prepared, skip: SkipFit | None) -> tuple[Any, Any]:
    """Forecasts and actuals of the training windows for calibration, the fitted linear skip's part
    replaced by an out-of-sample one (calibration.out_of_sample_shift; windows without earlier data dropped)."""
    import torch

    pick = np.linspace(0, len(train_idx) - 1, min(len(train_idx), MAX_SCALE_WINDOWS)).astype(np.int64)
    tr = train_idx[torch.from_numpy(pick).to(train_idx.device)]  # evenly spread: the cost stays bounded
    pred, y = window_forecasts(model, tensor, tr, prep)
    if skip is None or math.isinf(skip.lam) or not len(tr):  # no skip, or a baseline: nothing fitted
        return pred, y

    windows = tensor.unfold(0, prep.window + prep.horizon, 1).cpu()
    shift, ok = out_of_sample_shift(windows, tr, train_idx, prep.window, prep.horizon, prep.series.n_targets,
                                    prep.season, skip, ridge_weight(cfg, windows, train_idx, prep, skip),
                                    cfg.train.loss, cfg.train.seed)
    return pred[ok] + shift[ok][..., None], y[ok]


def ridge_weight(cfg: ForecastConfig, windows: Tensor, train_idx: Tensor, prep: Prepared, skip: SkipFit) -> Tensor:
    """The linear skip as fitted on the training windows, before training: the reference of the out-of-sample
    shift. Not the trained model's skip weight: training moves it and the LSTM head makes up for the move, so
    a shift taken against it takes the move out of the calibration forecasts while the head's answer to it
    stays in. A resumed run's SkipFit holds only the choice: refitted with it."""
    if skip.weight.numel():
        return skip.weight.detach().cpu()
    from lstmcast.training.skip_init import fit_skip

    return fit_skip(windows, train_idx.cpu(), train_idx[:0].cpu(), prep.window, prep.horizon, prep.series.n_targets,
                    prep.season, cfg.train.loss, cfg.train.seed, skip).weight


def window_forecasts(model: LSTMForecaster, tensor: Tensor, idx: Tensor, prep: Prepared) -> tuple[Any, Any]:
    """The model's quantile forecasts (N, H, T, Q) and the actuals (N, H, T) of windows ``idx`` (scaled)."""
    L, H, T = prep.window, prep.horizon, prep.series.n_targets
    if len(idx) == 0:
        return np.zeros((0, H, T, len(model.quantiles or ()))), np.zeros((0, H, T))

    idx = idx.to(tensor.device)
    b = split_window(tensor.unfold(0, L + H, 1)[idx].cpu(), prep.roles)  # the batch's roles, on the host
    static = prep.statics[prep.row_series()[idx.cpu().numpy()]] if prep.statics is not None else None
    future = b.future.float().numpy() if b.future is not None else None
    pred = _predict_scaled(model, b.past.contiguous().float().numpy(), future=future, static=static)
    return pred.astype(np.float64), b.y.double().numpy()
