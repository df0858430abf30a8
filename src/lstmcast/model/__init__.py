"""The network and everything that defines it: LSTMForecaster, the config-to-module mapping (build.py),
losses, quantiles, sizing and the shape/parameter arithmetic (estimate.py).

``LSTMForecaster`` loads lazily so that the pure-arithmetic modules here import without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LSTMForecaster"]


def __getattr__(name: str) -> Any:
    if name == "LSTMForecaster":
        from lstmcast.model.network import LSTMForecaster

        return LSTMForecaster
    raise AttributeError(f"module 'lstmcast.model' has no attribute {name!r}")
