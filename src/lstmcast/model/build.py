"""The ONE config-to-module mapping: fit, load, doctor and export build the model through it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lstmcast.config import ModelConfig
from lstmcast.errors import ConfigError
from lstmcast.model.quantiles import quantiles_for

if TYPE_CHECKING:
    from lstmcast.model.network import LSTMForecaster


def build_model(m: ModelConfig, input_size: int, n_targets: int, horizon: int, window: int, future_size: int = 0,
                static_size: int = 0, static_cardinalities: tuple[int, ...] = ()) -> LSTMForecaster:
    """The LSTMForecaster a config describes, for data of ``input_size`` channels (F is never typed in), with
    ``future_size`` known-future channels, ``static_size`` numeric statics and one embedding per cardinality."""
    from lstmcast.model.network import LSTMForecaster  # torch: `import lstmcast.forecaster` stays light

    if m.hidden_size == "auto" or m.dropout == "auto":
        raise ConfigError("build_model needs a resolved model config: model.hidden_size and model.dropout 'auto' "
                          "become numbers in lstmcast.model.sizing.resolve_model")
    return LSTMForecaster(input_size=input_size, n_targets=n_targets, horizon=horizon, hidden_size=m.hidden_size,
                          num_layers=m.num_layers, dropout=m.dropout, bidirectional=m.bidirectional,
                          residual=m.residual, bias=m.bias, window_norm=m.window_norm, window=window,
                          linear_skip=m.linear_skip, quantiles=quantiles_for(m.levels) if m.levels else None,
                          future_size=future_size, static_size=static_size,
                          static_cardinalities=tuple(static_cardinalities))
