"""Data-parallel training over several processes: `lstmcast train --nproc N` or torchrun; gloo on CPU,
NCCL on GPUs (one GPU per rank: rank with LOCAL_RANK k trains on cuda:k).

Every rank holds the whole series and draws the same epoch order from the same seed; each step, rank r
trains on its share of the global batch (``train.batch_size`` stays the global batch, so N ranks follow
the loss curve of one process). The Trainer sees only this object:

- ``shard(idx)``: this rank's windows of a global batch, and the weight of its mean loss in the batch's;
- ``step(params, loss, stop)``: ONE all-reduce per step of the gradients, the batch loss and the stop
  flag, so every rank applies the same update, sees the same loss (the non-finite guard's counters and
  rollbacks then agree without a second collective) and stops at the same step after a signal;
- ``val_share(idx)`` / ``total(x)``: validation split over the ranks and summed, so early stopping,
  the scheduler and the best epoch are decided alike everywhere.

With ``sharded`` (data.shard_series, data/shard.py) each rank holds only its own series: ``shard`` takes
the rank's own draw of ``local_batch`` windows, ``count`` sums window counts over the ranks (so every rank
takes the same steps and validation divides by the total), ``val_share`` keeps all of the rank's windows,
and ``sum_host`` / ``gather`` / ``gather_to_main`` carry the skip's sums and the per-series outputs.

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
    # data.shard_series: each rank holds only its own series and draws its own share of every batch from them
    sharded: bool = False
    device: str = "cpu"  # where collectives of host values travel ("cuda" under NCCL)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def threads(self, cores: int) -> int:
        """Torch threads per rank: the machine's cores shared by the ranks on it."""
        return max(1, cores // self.local_world)

    def shard(self, idx: Tensor, batch_size: int | None = None) -> tuple[Tensor, float]:
        """This rank's windows of a global batch and their weight; sharded, ``idx`` is this rank's share
        already (``local_batch``), weighing len(idx) / batch_size."""
        if self.sharded:
            return idx, len(idx) / (batch_size or len(idx))
        B = len(idx)
        lo, hi = self.rank * B // self.world, (self.rank + 1) * B // self.world
        return idx[lo:hi], (hi - lo) / B

    def local_batch(self, batch_size: int) -> int:
        """The windows this rank takes per step: its share of the global batch (all of it unless sharded)."""
        if not self.sharded:
            return batch_size
        return (self.rank + 1) * batch_size // self.world - self.rank * batch_size // self.world

    def count(self, n: int) -> int:
        """A count over every rank's windows: summed when sharded (each rank holds its own), else ``n``."""
        if not self.sharded:
            return n
        x = torch.tensor([float(n)], dtype=torch.float64, device=self.device)
        self._all_reduce(x)
        return int(x.item())

    def sum_host(self, x: Tensor) -> Tensor:
        """``x`` (a host tensor) summed over the ranks, back on the host."""
        y = x.to(self.device)
        self._all_reduce(y)
        return y.cpu()

    def gather(self, obj: object) -> list[object]:
        """Every rank's ``obj``, in rank order, on every rank (small per-series results, not the data)."""
        out: list[object] = [None] * self.world
        self._call(torch.distributed.all_gather_object, out, obj)
        return out

    def gather_to_main(self, obj: object) -> list[object] | None:
        """Every rank's ``obj`` in rank order on rank 0 (None on the others): per-series outputs."""
        out: list[object] | None = [None] * self.world if self.is_main else None
        self._call(torch.distributed.gather_object, obj, out, 0)
        return out

    def epoch_seed(self, seed: int, epoch: int) -> int:
        """Sharded: the seed of this rank's draw of an epoch's windows, from (seed, epoch, rank), so a resumed
        epoch re-draws the same windows on every rank."""
        return ((seed * 1_000_003 + epoch) * 65_537 + self.rank) % 2**63

    def step(self, params: list[nn.Parameter], loss: Tensor, stop: bool) -> tuple[Tensor, bool]:
        """Sum the (weighted) gradients, losses and stop flags of every rank; returns (batch loss, stop)."""
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).float(),  # on the rank's device
                                                           torch.tensor([float(stop)], device=loss.device)])
        self._all_reduce(flat)
        pos = 0
        for g in grads:
            g.copy_(flat[pos:pos + g.numel()].view_as(g))
            pos += g.numel()
        return flat[pos], bool(flat[pos + 1] > 0)

    def val_share(self, idx: Tensor) -> Tensor:
        return idx if self.sharded else idx[self.rank::self.world]

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
        except RuntimeError as exc:  # a peer closed the connection (gloo), the communicator aborted (NCCL), timeout
            raise InterruptedRun(
                f"rank {self.rank}: another rank of the {self.world} was lost ({str(exc).splitlines()[0][:160]}); "
                "the launcher names it. Continue from the last checkpoint with `lstmcast train --resume RUN` "
                "(the same command with --nproc)") from None


@dataclass(frozen=True)
class Plan:
    """How one rank joins: the process group's backend and its device (``train.device`` and the GPU index)."""

    backend: str  # "nccl" or "gloo"
    device: str  # "cuda" or "cpu": what train.device becomes on this rank
    gpu: int | None = None  # cuda:gpu, the rank's own GPU (its LOCAL_RANK)


def plan(device: str, local_rank: int, local_world: int, gpus: int) -> Plan:
    """NCCL on cuda:LOCAL_RANK when the rank trains on a GPU (one GPU per rank on each machine), gloo on CPU.

    ``device`` is train.device; ``gpus`` the CUDA devices this rank sees. ``auto`` takes the GPUs only when
    every local rank gets its own; ``cuda`` refuses, saying the fix, when there are none or too few.
    """
    if device == "cpu":
        return Plan("gloo", "cpu")
    if gpus >= local_world and gpus > local_rank:
        return Plan("nccl", "cuda", local_rank)
    if device == "auto":
        if gpus:
            log.warning("%d GPUs for %d ranks on this machine: training on CPU (gloo); one GPU per rank uses "
                        "NCCL: start at most %d ranks per machine", gpus, local_world, gpus)
        return Plan("gloo", "cpu")
    if not gpus:
        raise ConfigError("train.device=cuda but no CUDA GPU is visible to this rank (torch.cuda.device_count() "
                          "is 0): set train.device=cpu to train the ranks on CPU (gloo), or run where GPUs are")
    raise ConfigError(f"train.device=cuda with {local_world} ranks on this machine but {gpus} CUDA GPUs visible: "
                      "each rank needs its own GPU (NCCL, cuda:LOCAL_RANK): start at most "
                      f"{gpus} ranks per machine (--nproc {gpus} / --nproc-per-node {gpus}), or set "
                      "train.device=cpu")


def from_env(device: str = "cpu") -> tuple[Distributed, Plan] | None:
    """The process group torchrun described in the environment, joined here, or None alone.

    ``device`` (train.device) picks the backend (``plan``); a GPU rank binds its GPU first
    (``torch.cuda.set_device``), so "cuda" means cuda:LOCAL_RANK for every tensor it makes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local_world = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", world))
    local_rank = int(os.environ.get("LOCAL_RANK", rank % local_world))
    gpus = torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 0
    how = plan(device, local_rank, local_world, gpus)
    import torch.distributed as td

    if how.gpu is not None:
        torch.cuda.set_device(how.gpu)
    if not td.is_initialized():
        gpu = torch.device("cuda", how.gpu) if how.gpu is not None else None
        td.init_process_group(how.backend, timeout=TIMEOUT, device_id=gpu)
    log.info("rank %d of %d: backend %s on %s", rank, world, how.backend, gpu or "cpu")
    return Distributed(rank=rank, world=world, local_world=local_world,
                       device="cuda" if how.gpu is not None else "cpu"), how


def close() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
