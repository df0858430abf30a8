"""The training loss: ``train.loss`` for a point model, the pinball loss for a quantile model."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmcast.model.quantiles import pinball_loss

LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": F.huber_loss,
}


def loss_for(model: nn.Module, name: str, device: torch.device) -> Callable[[Tensor, Tensor], Tensor]:
    """train.loss for a point model; the pinball loss over Q for a quantile model (model.levels set).

    Training, validation and early stopping all use it, so the quantiles are what early stopping selects."""
    quantiles = getattr(model, "quantiles", None)
    if not quantiles:  # auto reaches here only from a Trainer built by hand (Forecaster.fit resolves it)
        return LOSSES["mse" if name == "auto" else name]

    return pinball_loss(torch.tensor(quantiles, device=device))  # made once: no host copy in a CUDA graph
