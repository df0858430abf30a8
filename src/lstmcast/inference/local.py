"""Whether a table's forecast takes each series' Theta forecast in (``model.local: auto``), judged on validation.

The combination (lstmcast.model.theta) was measured on forecasting-competition panels of short series, where it
beats both of its parts. On long series a global model can be far better than any per-series Theta line (the
single-series suite: half-hourly electricity at a third of Theta's error), and a fixed share of Theta would
cost accuracy there. So ``auto`` asks the validation windows: the model's forecast of each validation window
against (1 - w) x it + w x the series' Theta forecast from the history before the window (w in GATE_WEIGHTS),
mean absolute error in scaled units (each series' own scale). If some w beats the model alone, the table's
forecast is combined with ``model.local_weight`` (0.3); otherwise the model forecasts alone.

Validation is a gate here, not the weight's judge: each series' validation history is two horizons shorter than
at forecast time (a third of a yearly series' points), and the model was early-stopped on these windows, so
validation favours the model. On the six competition subsets it preferred w = 0.1-0.3 where the test wanted
0.3-0.4 (README "Panels of short series"), and it said yes on all six.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lstmcast.model.theta import HISTORY_CAP, LOCAL_DRIFT, theta_per_target

if TYPE_CHECKING:
    from torch import Tensor

    from lstmcast.data.prepare import Prepared
    from lstmcast.model.network import LSTMForecaster

log = logging.getLogger("lstmcast.forecaster")
GATE_WEIGHTS = (0.1, 0.2, 0.3)  # the Theta shares tried against the model alone
MAX_WINDOWS = 4096  # validation windows the gate reads (evenly spread): its cost stays bounded


def theta_helps(model: LSTMForecaster, tensor: Tensor, val_idx: Tensor, prep: Prepared,
                gather: Callable[[object], list[object]] = lambda x: [x]) -> tuple[bool, dict[str, Any]]:
    """Whether some weight of GATE_WEIGHTS has a lower validation error than the model alone, and each error
    (``"w=0"`` the model's). ``gather``: every rank's object (World.gather), so the ranks of a sharded table
    decide together. No validation window anywhere: False."""
    sums = validation_errors(model, tensor, val_idx, prep)
    total: dict[float, list[float]] = {}
    for part in cast(list[dict[float, tuple[float, int]]], gather(sums)):
        for w, (err, n) in part.items():
            acc = total.setdefault(w, [0.0, 0])
            acc[0] += err
            acc[1] += n
    if not total or not total[0.0][1]:
        return False, {}
    errors = {f"w={w:g}": round(acc[0] / acc[1], 6) for w, acc in sorted(total.items())}
    base = errors.pop("w=0")
    helps = min(errors.values()) < base
    return helps, {"w=0": base, **errors}


def validation_errors(model: LSTMForecaster, tensor: Tensor, val_idx: Tensor, prep: Prepared
                      ) -> dict[float, tuple[float, int]]:
    """weight -> (the summed absolute error of the combination in scaled units, the number of errors) over this
    process's validation windows (at most MAX_WINDOWS, evenly spread); empty without windows."""
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
    return {float(w): (float(np.sum(np.abs((1 - w) * point + w * local - y))), int(y.size))
            for w in (0.0, *GATE_WEIGHTS)}


def validation_histories(prep: Prepared, starts: np.ndarray, sidx: np.ndarray) -> list[np.ndarray]:
    """Each window's series before its origin (at most HISTORY_CAP rows, no padding), (n_i, T) in the model's
    units before scaling."""
    T, L = prep.series.n_targets, prep.window
    first = prep.index.offsets[sidx] + np.array([prep.pad_of(int(i)) for i in sidx], dtype=np.int64)
    return [prep.scaled[max(a, b - HISTORY_CAP):b, :T].astype(np.float64) * prep.stds[i, :T] + prep.means[i, :T]
            for a, b, i in zip(first.tolist(), (starts + L).tolist(), sidx.tolist())]
