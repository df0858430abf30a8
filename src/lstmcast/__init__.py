"""lstmcast: LSTM time-series forecasting on PyTorch, correct by construction, fast, explainable.

The public API is imported lazily so that ``import lstmcast`` (and ``lstmcast --help``) stays fast:
torch, pandas and friends load only when a name that needs them is used.

>>> import lstmcast
>>> lstmcast.__version__
'0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Forecaster": ("lstmcast.forecaster", "Forecaster"),
    "ForecastConfig": ("lstmcast.config", "ForecastConfig"),
    "load_config": ("lstmcast.config", "load_config"),
    "LSTMForecaster": ("lstmcast.model.network", "LSTMForecaster"),
    "load": ("lstmcast.forecaster", "load_run"),
    "doctor": ("lstmcast.doctor.report", "doctor"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lstmcast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
