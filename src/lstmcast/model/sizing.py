"""``auto`` model settings resolved from the data: the guide's sizing advice applied, not only printed.

``model.hidden_size: auto`` takes the widest of 8, 16, 32, 64 whose model keeps at least
``MIN_WINDOWS_PER_PARAMETER`` training windows per parameter (the doctor's overfitting threshold), so a
150-point monthly series gets a small model and a long series the full 64. ``model.dropout: auto`` is 0.1
between stacked layers and 0 with one layer (LSTM dropout acts between layers only).

>>> from lstmcast.config import ModelConfig
>>> auto_hidden(ModelConfig(), train_windows=45, F=1, T=1, H=12, L=24)
16
>>> auto_hidden(ModelConfig(), train_windows=100_000, F=1, T=1, H=12, L=24)
64
"""

from __future__ import annotations

from typing import Any

from lstmcast.config import ModelConfig
from lstmcast.model.estimate import Dims, n_parameters

MIN_WINDOWS_PER_PARAMETER = 0.01  # fewer than one training window per 100 parameters: overfitting risk
HIDDEN_CHOICES = (8, 16, 32, 64)
AUTO_DROPOUT = 0.1


def model_parameters(m: ModelConfig, hidden: int, F: int, T: int, H: int, L: int, future_size: int = 0,
                     static_size: int = 0, static_cardinalities: tuple[int, ...] = ()) -> int:
    """Trainable parameters of the model ``m`` describes with ``hidden`` units (equal to sum(p.numel())),
    the decoder and static embeddings included (the sizes of lstmcast.data.inputs.InputSpec.model_sizes)."""
    d = Dims(B=1, L=L, H=H, F=F, T=T, D=2 if m.bidirectional else 1, hidden=hidden, layers=m.num_layers,
             residual=m.residual, bias=m.bias, skip=m.linear_skip, Q=2 * len(m.levels) + 1 if m.levels else 0,
             K=future_size, S=static_size, cards=tuple(static_cardinalities))
    return n_parameters(d)


def auto_hidden(m: ModelConfig, train_windows: int, F: int, T: int, H: int, L: int, **sizes: Any) -> int:
    """The widest hidden size in HIDDEN_CHOICES with enough training windows per parameter."""
    fits = [h for h in HIDDEN_CHOICES
            if train_windows / model_parameters(m, h, F, T, H, L, **sizes) >= MIN_WINDOWS_PER_PARAMETER]
    return max(fits) if fits else HIDDEN_CHOICES[0]


def resolve_model(m: ModelConfig, train_windows: int | None, F: int, T: int, H: int, L: int,
                  **sizes: Any) -> ModelConfig:
    """A copy of ``m`` with ``auto`` replaced by numbers (no data: hidden 64, the largest choice); ``sizes``:
    the known-future and static input sizes (InputSpec.model_sizes()), whose parameters count too."""
    out = m.model_copy()
    if m.hidden_size == "auto":
        out.hidden_size = auto_hidden(m, train_windows, F, T, H, L, **sizes) if train_windows else HIDDEN_CHOICES[-1]
    if m.dropout == "auto":
        out.dropout = AUTO_DROPOUT if m.num_layers > 1 else 0.0
    return out
