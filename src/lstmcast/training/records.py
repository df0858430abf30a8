"""What the loop shares with its callers and callbacks: the data it trains on (``TrainData``), what one epoch
leaves behind (``EpochRecord``: history.json rows) and the read-only view of the run a callback gets
(``StepView``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor, nn

    from lstmcast.config import TrainConfig
    from lstmcast.data.windows import Batch, Roles, Statics
    from lstmcast.training.signals import StopRequest


@dataclass(frozen=True)
class TrainData:
    """The windows a run trains and validates on: ``windows`` (rows, C, L + H) is a view of ONE tensor of scaled
    series (``of``), ``train_idx`` / ``val_idx`` window starts into it, ``roles`` which channels play which
    part, ``statics`` the per-series inputs (None without)."""

    windows: Tensor
    train_idx: Tensor
    val_idx: Tensor
    roles: Roles
    statics: Statics | None = None
    series: Tensor | None = None  # the (N, C) tensor the windows view (model.stateful reads whole histories)

    @classmethod
    def of(cls, series: Tensor, train_idx: Tensor, val_idx: Tensor, roles: Roles,
           statics: Statics | None = None) -> TrainData:
        """``series`` (N, C) on the training device, or in host memory when it did not fit (batches stream)."""
        return cls(series.unfold(0, roles.window + roles.horizon, 1), train_idx, val_idx, roles, statics, series)


@runtime_checkable
class KeepsState(Protocol):
    """A callback whose ``state()`` goes into every checkpoint under ``checkpoint_key`` (the monitor), so a
    resumed run continues it."""

    checkpoint_key: str

    def state(self) -> dict[str, Any]: ...


def kept_states(callbacks: Iterable[object]) -> dict[str, dict[str, Any]]:
    """What a checkpoint stores for the callbacks that keep state: each one's ``state()`` under its key."""
    return {cb.checkpoint_key: cb.state() for cb in callbacks if isinstance(cb, KeepsState)}


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    lr: float
    grad_norm: float
    clipped_fraction: float
    skipped_steps: int
    steps: int
    seconds: float
    samples_per_s: float
    rollbacks: int = 0  # rollbacks of the non-finite guard so far in the run

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StepView:
    """A callback's view of the run after an epoch: where it stands, what it trains, and one thing it may do,
    ``stop.request()`` (the run then stops as after SIGINT: checkpoint, flush, report). ``carried``: a stateful
    run's carried-state norms (None for window models)."""

    epoch: int
    step: int
    bad_epochs: int  # epochs without a validation improvement, as early stopping counts them
    finished: bool  # early stopping or max_epochs ends the run after this epoch
    steps_per_epoch: int
    cfg: TrainConfig
    model: nn.Module
    loss_fn: Callable[..., Tensor]
    data: TrainData
    gather: Callable[[Tensor], Batch]  # window starts -> a Batch on the training device
    stop: StopRequest
    carried: dict[str, float] | None = None  # model.stateful: mean norms of the carried h and c (the monitor's)
