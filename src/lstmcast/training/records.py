"""What one epoch of training leaves behind (history.json rows, the callbacks' argument)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
