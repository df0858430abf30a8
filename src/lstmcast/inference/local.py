"""Whether a table's forecast takes each series' Theta forecast in (``model.local: auto``), judged on validation.

The combination (lstmcast.model.theta) was measured on forecasting-competition panels of short series, where it
beats both of its parts. On long series a global model can be far better than any per-series Theta line (the
single-series suite: half-hourly electricity at a quarter of Theta's error), and a fixed share of Theta would
cost accuracy there. So ``auto`` asks the validation windows: each series' mean absolute error (scaled units)
of the model alone and of (1 - w) x the model + w x the series' Theta forecast from the history before each
window, w in GATE_WEIGHTS. The table keeps the model alone only where even the best of those weights is
clearly worse: its mean per-series difference above GATE_T standard errors. Otherwise the forecast is combined
at ``model.local_weight`` (0.3).

Validation is a gate here, not the weight's judge, and the benefit of the doubt goes to the combination:
each series' validation history is two horizons shorter than at forecast time (a third of a yearly series'
points) and the model was early-stopped on these windows, so validation favours the model. On the six
competition subsets it preferred w = 0.1-0.3 where the test wanted 0.3-0.4, and on Tourism yearly (seed 2)
the model alone was ahead by 0.16 standard errors although the combination won on the test (README
"Panels of short series").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np

from lstmcast.model.theta import HISTORY_CAP, LOCAL_DRIFT, theta_per_target
from lstmcast.run.meta import Local

if TYPE_CHECKING:
    from torch import Tensor

    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.model.network import LSTMForecaster

log = logging.getLogger("lstmcast.forecaster")
GATE_WEIGHTS = (0.1, 0.2, 0.3)  # the Theta shares tried against the model alone
GATE_T = 2.0  # standard errors by which the best share must lose to keep the model alone
MAX_WINDOWS = 4096  # validation windows the gate reads (evenly spread): its cost stays bounded


def local_combination(cfg: ForecastConfig, model: LSTMForecaster, tensor: Tensor, val_idx: Tensor, prep: Prepared,
                      gather: Callable[[object], list[object]] = lambda x: [x]) -> Local | None:
    """meta.json ``local`` of a fitted run: model.local auto decided by the gate (``cfg.model.local`` is set to
    what it became, so config.yaml records it); None where the model forecasts alone."""
    gate = None
    if cfg.model.local == "auto":  # a table: does each series' Theta forecast help on validation?
        helps, gate = theta_helps(model, tensor, val_idx, prep, gather)
        cfg.model.local = "theta" if helps else "none"
        log.info("model.local auto -> %s: validation mean absolute error (scaled) %s", cfg.model.local, gate)
    if cfg.model.local != "theta":
        return None
    return Local(method="theta", weight=cfg.model.local_weight, drift=LOCAL_DRIFT, gate=gate)


def theta_helps(model: LSTMForecaster, tensor: Tensor, val_idx: Tensor, prep: Prepared,
                gather: Callable[[object], list[object]] = lambda x: [x]) -> tuple[bool, dict[str, float]]:
    """The gate (``decide``) on this table's validation windows. ``gather``: every rank's object (World.gather),
    so the ranks of a sharded table decide together on all its series."""
    parts = cast(list[dict[float, np.ndarray]], gather(series_errors(model, tensor, val_idx, prep)))
    per = {w: np.concatenate([p[w] for p in parts if p]) for w in (0.0, *GATE_WEIGHTS)} \
        if any(parts) else {}
    return decide(per)


def decide(per: dict[float, np.ndarray]) -> tuple[bool, dict[str, float]]:
    """``per``: weight -> each series' mean validation error (0.0: the model alone). False only where the best
    weight's mean per-series difference from the model alone is above GATE_T standard errors; and the errors
    (``w=...``) with that difference's t statistic (``t``). No series: True, nothing measured."""
    if not per or not len(per[0.0]):
        return True, {}
    stats = {}
    for w in GATE_WEIGHTS:
        d = per[w] - per[0.0]
        se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else math.inf
        stats[w] = (float(np.mean(d)), se)
    mean, se = stats[min(GATE_WEIGHTS, key=lambda w: stats[w][0])]
    t = mean / se if se > 0 else (math.copysign(math.inf, mean) if mean else 0.0)
    gate = {f"w={w:g}": round(float(np.mean(v)), 6) for w, v in per.items()}
    return not t > GATE_T, {**gate, "t": round(t, 3) if math.isfinite(t) else (1e9 if t > 0 else -1e9)}


def series_errors(model: LSTMForecaster, tensor: Tensor, val_idx: Tensor, prep: Prepared) -> dict[float, np.ndarray]:
    """weight -> each series' mean absolute error in scaled units of (1 - w) x the model's forecast + w x its
    Theta forecast, over this process's validation windows (at most MAX_WINDOWS, evenly spread); empty
    without windows."""
    import torch

    from lstmcast.inference.intervals import window_forecasts

    if not len(val_idx):
        return {}
    pick = np.linspace(0, len(val_idx) - 1, min(len(val_idx), MAX_WINDOWS)).astype(np.int64)
    idx = val_idx[torch.from_numpy(pick).to(val_idx.device)]
    pred, y = window_forecasts(model, tensor, idx, prep)
    point = pred[..., pred.shape[-1] // 2] if pred.ndim == 4 else pred  # (N, H, T) scaled
    starts = idx.cpu().numpy()
    sidx = prep.row_series()[starts]
    T, H = prep.series.n_targets, prep.horizon
    mean, std = prep.means[sidx][:, None, :T], prep.stds[sidx][:, None, :T]
    local = (theta_per_target(validation_histories(prep, starts, sidx), H, T, prep.season, LOCAL_DRIFT) - mean) / std
    local = np.where(np.isfinite(local), local, point)
    _, where = np.unique(sidx, return_inverse=True)
    count = np.bincount(where)
    return {float(w): np.bincount(where, np.abs((1 - w) * point + w * local - y).mean(axis=(1, 2))) / count
            for w in (0.0, *GATE_WEIGHTS)}


def validation_histories(prep: Prepared, starts: np.ndarray, sidx: np.ndarray) -> list[np.ndarray]:
    """Each window's series before its origin (at most HISTORY_CAP rows, no padding), (n_i, T) in the model's
    units before scaling."""
    T, L = prep.series.n_targets, prep.window
    first = prep.index.offsets[sidx] + np.array([prep.pad_of(int(i)) for i in sidx], dtype=np.int64)
    return [prep.scaled[max(a, b - HISTORY_CAP):b, :T].astype(np.float64) * prep.stds[i, :T] + prep.means[i, :T]
            for a, b, i in zip(first.tolist(), (starts + L).tolist(), sidx.tolist())]
