"""Data-parallel training over several processes (gloo, CPU): `lstmcast train --nproc N` or torchrun.

Every rank holds the whole series and draws the same epoch order from the same seed; each step, rank r
trains on its share of the global batch (``train.batch_size`` stays the global batch, so N ranks follow
the loss curve of one process). The Trainer sees only this object:

- ``shard(idx)``: this rank's windows of a global batch, and the weight of its mean loss in the batch's;
- ``step(params, loss, stop)``: ONE all-reduce per step of the gradients, the batch loss and the stop
  flag, so every rank applies the same update, sees the same loss (the non-finite guard's counters and
  rollbacks then agree without a second collective) and stops at the same step after a signal;
- ``val_share(idx)`` / ``total(x)``: validation split over the ranks and summed, so early stopping,
  the scheduler and the best epoch are decided alike everywhere.

Only rank 0 writes the run folder and checkpoints. A lost rank breaks the collective on the others,
which stop with InterruptedRun naming it (torchrun's agent also stops them); ``--resume`` continues
from rank 0's last checkpoint.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import Tensor, nn

from lstmcast.errors import ConfigError, InterruptedRun

log = logging.getLogger(__name__)
TIMEOUT = timedelta(seconds=300)  # a rank that hangs (not dies) stops the others after this


@dataclass(frozen=True)
class Distributed:
    rank: int
    world: int
    local_world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def threads(self, cores: int) -> int:
        """Torch threads per rank: the machine's cores shared by the ranks on it."""
        return max(1, cores // self.local_world)

    def shard(self, idx: Tensor) -> tuple[Tensor, float]:
        B = len(idx)
        lo, hi = self.rank * B // self.world, (self.rank + 1) * B // self.world
        return idx[lo:hi], (hi - lo) / B

    def step(self, params: list[nn.Parameter], loss: Tensor, stop: bool) -> tuple[Tensor, bool]:
        """Sum the (weighted) gradients, losses and stop flags of every rank; returns (batch loss, stop)."""
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).float(),
                                                           torch.tensor([float(stop)])])
        self._all_reduce(flat)
        pos = 0
        for g in grads:
            g.copy_(flat[pos:pos + g.numel()].view_as(g))
            pos += g.numel()
        return flat[pos], bool(flat[pos + 1] > 0)

    def val_share(self, idx: Tensor) -> Tensor:
        return idx[self.rank::self.world]

    def total(self, x: Tensor) -> Tensor:
        self._all_reduce(x)
        return x

    def broadcast_model(self, model: nn.Module) -> None:
        """Start every rank from rank 0's weights (they agree already from the seed; this makes it so)."""
        for t in model.state_dict().values():
            self._call(torch.distributed.broadcast, t, 0)

    def _all_reduce(self, x: Tensor) -> None:
        self._call(torch.distributed.all_reduce, x)

    def _call(self, fn, *args) -> None:  # noqa: ANN001 - a torch.distributed collective
        try:
            fn(*args)
        except RuntimeError as exc:  # gloo: a peer closed the connection or the timeout passed
            raise InterruptedRun(
                f"rank {self.rank}: another rank of the {self.world} was lost ({str(exc).splitlines()[0][:160]}); "
                "the launcher names it. Continue from the last checkpoint with `lstmcast train --resume RUN` "
                "(the same command with --nproc)") from None


def from_env() -> Distributed | None:
    """The process group torchrun described in the environment (initialised here, gloo), or None alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local_world = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", world))
    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group("gloo", timeout=TIMEOUT)
    return Distributed(rank=rank, world=world, local_world=local_world)


def check_device(device: str) -> str:
    if device == "cuda":
        raise ConfigError("train.device=cuda with several ranks is not supported yet (distributed training "
                          "uses gloo on CPU): set train.device=cpu, or train on one GPU without --nproc/torchrun")
    return "cpu"


def close() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
