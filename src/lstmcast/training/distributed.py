"""Joining a torchrun process group: which backend and device a rank uses (``plan``) and the join itself
(``from_env``). What the ranks then do together (batches, the per-step all-reduce, sharded data) is the
World's (world.py)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch

from lstmcast.errors import ConfigError
from lstmcast.training.accel import available_cores
from lstmcast.training.world import Replicated, Sharded, Solo, World, env_rank

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig

log = logging.getLogger(__name__)
TIMEOUT = timedelta(seconds=300)  # a rank that hangs (not dies) stops the others after this


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


def from_env(device: str = "cpu") -> tuple[Replicated, Plan] | None:
    """The process group torchrun described in the environment, joined here, or None alone.

    ``device`` (train.device) picks the backend (``plan``); a GPU rank binds its GPU first
    (``torch.cuda.set_device``), so "cuda" means cuda:LOCAL_RANK for every tensor it makes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local_world = env_rank(), int(os.environ.get("LOCAL_WORLD_SIZE", world))
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
    return Replicated(rank=rank, world=world, local_world=local_world,
                      device="cuda" if how.gpu is not None else "cpu"), how


def join(cfg: ForecastConfig) -> tuple[ForecastConfig, World]:
    """This process's World: under torchrun the process group joined (NCCL on this rank's GPU, gloo on CPU:
    distributed.plan), with the cores shared among this machine's ranks, and in fp32 unless set (a measured
    precision could differ between ranks); alone, Solo."""
    joined = from_env(cfg.train.device)
    if joined is None:
        return cfg, Solo()
    place, how = joined
    kind = Sharded if cfg.data.shard_series else Replicated
    world = kind(**dataclasses.asdict(place))
    t = cfg.train
    train = t.model_copy(update={"device": how.device, "threads": t.threads or world.threads(available_cores()),
                                 "precision": "fp32" if t.precision == "auto" else t.precision})
    return cfg.model_copy(update={"train": train}), world


def close() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
