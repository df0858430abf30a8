"""The processes one training run spans: a ``World`` the Trainer, fit and the outputs always hold.

- ``Solo``: one process; every collective is the identity, so no caller asks "is there a process group".
- ``Replicated``: N ranks (torchrun), each holding all the data. ``train.batch_size`` stays the global batch:
  each rank takes its slice of every batch (``shard``) weighing its share of the batch's mean loss, and ONE
  all-reduce per step (``step``) sums gradients, the batch loss and the stop flag, so every rank applies the
  same update, sees the same loss (the non-finite guard then agrees without a second collective) and stops at
  the same step after a signal. Validation is split over the ranks and summed (``val_share`` / ``total``).
- ``Sharded`` (``data.shard_series``, data/shard.py): N ranks, each holding only its own series. ``read``
  loads this rank's series and every id; ``together`` makes one rank's refusal every rank's; ``agree`` sets the
  window, season, frequency and channels alike; ``merge`` gives scaler.json and meta.json every series.
  Each rank draws its own share of a batch (``local_batch``) from its own windows; ``count`` sums window
  counts over the ranks, so every rank takes the same steps and validation divides by the total.

Only the main rank (``is_main``, rank 0: asked here and nowhere else) writes the run folder and checkpoints. A
lost rank breaks the collective on the others, which stop with InterruptedRun naming it; ``--resume``
continues from rank 0's last checkpoint. Joining a process group: distributed.py (``join``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from lstmcast import errors
from lstmcast.data.load import load_series
from lstmcast.data.shard import load_shard, refuse_unshardable
from lstmcast.errors import ConfigError, InterruptedRun, LstmcastError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.data.validate import SeriesSet

log = logging.getLogger(__name__)
T = TypeVar("T")


def env_rank() -> int:
    """This process's rank as torchrun set it (0 alone): read before any process group exists (the CLI)."""
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class World:
    """One process (``Solo``'s behaviour); the subclasses below add the collectives."""

    rank: int = 0
    world: int = 1
    local_world: int = 1
    device: str = "cpu"  # where collectives of host values travel ("cuda" under NCCL)

    sharded = False  # data.shard_series: each rank holds only its own series
    graphable = True  # whole-step CUDA graphs hold no collective
    lockstep = False  # ranks that take every guard snapshot together (the main rank's checkpoint schedule)

    @property
    def is_main(self) -> bool:
        """The rank that writes the run folder, checkpoints and outputs."""
        return self.rank == 0

    @property
    def shares(self) -> int:
        """How many ranks each hold a part of the data (1 unless sharded)."""
        return self.world if self.sharded else 1

    def threads(self, cores: int) -> int:
        """Torch threads per rank: the machine's cores shared by the ranks on it."""
        return max(1, cores // self.local_world)

    # -- the step ---------------------------------------------------------------------------------
    def broadcast_model(self, model: nn.Module) -> None:
        """Start every rank from rank 0's weights."""

    def shard(self, idx: Tensor, batch_size: int) -> tuple[Tensor, float]:
        """This rank's windows of a batch and the weight of their mean loss in the batch's."""
        return idx, 1.0

    def local_batch(self, batch_size: int) -> int:
        """The windows this rank takes per step."""
        return batch_size

    def count(self, n: int) -> int:
        """A count over every rank's windows (summed where each rank holds its own)."""
        return n

    def step(self, params: list[nn.Parameter], loss: Tensor, stop: bool) -> tuple[Tensor, bool]:
        """Every rank's (weighted) gradients, losses and stop flags summed; returns (batch loss, stop)."""
        return loss, stop

    def stop_now(self, requested: bool, agreed: bool) -> bool:
        """Whether to stop before the next step: this process's request, or (several ranks, which stop at the
        same step) the request any rank made, as of the last step's all-reduce."""
        return requested

    def epoch_draw(self, k: int, n_local: int, n_total: int, batch_size: int, generator: torch.Generator,
                   seed: int, epoch: int) -> tuple[int, int, torch.Generator]:
        """(windows an epoch draws, batch, generator) for this rank's order of the epoch's batches."""
        return k, batch_size, generator

    def val_share(self, idx: Tensor) -> Tensor:
        return idx

    def total(self, x: Tensor) -> Tensor:
        return x

    def resume_hint(self) -> str:
        """The end of the resume command: the same ranks (--resume continues exactly only with as many)."""
        return "`"

    # -- data and outputs -------------------------------------------------------------------------
    def validation_sample(self, cap: int | None, seed: int) -> tuple[int | None, int]:
        """train.val_windows and the sample's seed for this rank."""
        return cap, seed

    def read(self, data: Any, cfg: ForecastConfig) -> tuple[SeriesSet, list[str]]:
        """The series this rank trains on, and every id of the dataset (sorted, as one process has them)."""
        if cfg.data.shard_series:
            refuse_unshardable(data if data is not None else cfg.data.path, cfg, self.world)
        series = load_series(data, cfg)
        return series, list(series.ids)

    def together(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``; sharded, a user's error on any rank is raised on every rank."""
        return fn(*args)

    def agree(self, prep: Prepared, cfg: ForecastConfig, precision: str) -> Prepared:
        """The same window, season, frequency and channels on every rank."""
        return prep

    def merge(self, meta: Any, scaler: dict[str, Any], ids: list[str]) -> tuple[Any, dict[str, Any]]:
        """scaler.json and meta.json over every series."""
        return meta, scaler

    def sum_host(self, x: Tensor) -> Tensor:
        """``x`` (a host tensor) summed over the ranks, back on the host."""
        return x

    def gather(self, obj: object) -> list[object]:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj]

    def gather_to_main(self, obj: object) -> list[object] | None:
        """Every rank's ``obj`` in rank order on the main rank (None on the others)."""
        return [obj]


@dataclass(frozen=True)
class Solo(World):
    """One process: every collective is the identity (World's own behaviour)."""


@dataclass(frozen=True)
class Replicated(World):
    """N ranks, each holding all the data: batches split, one all-reduce per step."""

    graphable = False
    lockstep = True

    def broadcast_model(self, model: nn.Module) -> None:
        import torch  # only the ranks of a process group need it: the CLI asks is_main light

        for t in model.state_dict().values():
            self._call(torch.distributed.broadcast, t, 0)

    def shard(self, idx: Tensor, batch_size: int) -> tuple[Tensor, float]:
        B = len(idx)
        lo, hi = self.rank * B // self.world, (self.rank + 1) * B // self.world
        return idx[lo:hi], (hi - lo) / B

    def step(self, params: list[nn.Parameter], loss: Tensor, stop: bool) -> tuple[Tensor, bool]:
        import torch  # only the ranks of a process group need it: the CLI asks is_main light

        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).float(),  # on the rank's device
                                                           torch.tensor([float(stop)], device=loss.device)])
        self._all_reduce(flat)
        pos = 0
        for g in grads:
            g.copy_(flat[pos:pos + g.numel()].view_as(g))
            pos += g.numel()
        return flat[pos], bool(flat[pos + 1] > 0)

    def stop_now(self, requested: bool, agreed: bool) -> bool:
        return agreed

    def val_share(self, idx: Tensor) -> Tensor:
        return idx[self.rank::self.world]

    def total(self, x: Tensor) -> Tensor:
        self._all_reduce(x)
        return x

    def resume_hint(self) -> str:
        if self.world == self.local_world:
            return f" --nproc {self.world}`"
        return f"` under the same torchrun command on every machine ({self.world} ranks)"

    def sum_host(self, x: Tensor) -> Tensor:
        y = x.to(self.device)
        self._all_reduce(y)
        return y.cpu()

    def gather(self, obj: object) -> list[object]:
        import torch  # only the ranks of a process group need it: the CLI asks is_main light

        out: list[object] = [None] * self.world
        self._call(torch.distributed.all_gather_object, out, obj)
        return out

    def gather_to_main(self, obj: object) -> list[object] | None:
        import torch  # only the ranks of a process group need it: the CLI asks is_main light

        out: list[object] | None = [None] * self.world if self.is_main else None
        self._call(torch.distributed.gather_object, obj, out, 0)
        return out

    def _all_reduce(self, x: Tensor) -> None:
        import torch  # only the ranks of a process group need it: the CLI asks is_main light

        self._call(torch.distributed.all_reduce, x)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except RuntimeError as exc:  # a peer closed the connection (gloo), the communicator aborted (NCCL), timeout
            raise InterruptedRun(
                f"rank {self.rank}: another rank of the {self.world} was lost ({str(exc).splitlines()[0][:160]}); "
                "the launcher names it. Continue from the last checkpoint with `lstmcast train --resume RUN` "
                "(the same command with --nproc)") from None


@dataclass(frozen=True)
class Sharded(Replicated):
    """N ranks, each holding only its own series (data.shard_series)."""

    sharded = True

    def shard(self, idx: Tensor, batch_size: int) -> tuple[Tensor, float]:
        """``idx`` is this rank's share already (``local_batch``), weighing len(idx) / batch_size."""
        return idx, len(idx) / (batch_size or len(idx))

    def local_batch(self, batch_size: int) -> int:
        return (self.rank + 1) * batch_size // self.world - self.rank * batch_size // self.world

    def count(self, n: int) -> int:
        import torch  # only the ranks of a process group need it: the CLI asks is_main light

        x = torch.tensor([float(n)], dtype=torch.float64, device=self.device)
        self._all_reduce(x)
        return int(x.item())

    def epoch_draw(self, k: int, n_local: int, n_total: int, batch_size: int, generator: torch.Generator,
                   seed: int, epoch: int) -> tuple[int, int, torch.Generator]:
        """This rank's share of the epoch's windows from its own, drawn from (seed, epoch, rank), so a resumed
        epoch re-draws the same windows on every rank."""
        import torch  # only the ranks of a process group need it: the CLI asks is_main light

        gen = torch.Generator(device=generator.device).manual_seed(self.epoch_seed(seed, epoch))
        return max(1, -(-k * n_local // n_total)), self.local_batch(batch_size), gen

    def epoch_seed(self, seed: int, epoch: int) -> int:
        return ((seed * 1_000_003 + epoch) * 65_537 + self.rank) % 2**63

    def val_share(self, idx: Tensor) -> Tensor:
        return idx

    def validation_sample(self, cap: int | None, seed: int) -> tuple[int | None, int]:
        """This rank's share of the cap (cap / ranks) from its own series, from its own seed."""
        return cap and max(1, cap // self.world), seed + self.rank

    def read(self, data: Any, cfg: ForecastConfig) -> tuple[SeriesSet, list[str]]:
        return self.together(load_shard, data, cfg, self.rank, self.world)

    def together(self, fn: Callable[..., T], *args: Any) -> T:
        """The ranks hold different series, so one rank's DataError must not leave the others waiting on a lost
        peer (exit 130) but stop them all with its message and exit code."""
        failure: tuple[str, str] | None = None
        result: T | None = None
        try:
            result = fn(*args)
        except LstmcastError as exc:
            failure = (type(exc).__name__, str(exc))
        failed = [(r, f) for r, f in enumerate(self.gather(failure)) if f is not None]
        if failed:
            rank, failure_of_rank = failed[0]
            kind, text = cast(tuple[str, str], failure_of_rank)  # what `failure` is on every rank
            cls = getattr(errors, kind, LstmcastError)
            raise cls(text if rank == self.rank else f"rank {rank} of {self.world}: {text}") from None
        return cast(T, result)  # no rank failed, so fn returned it

    def agree(self, prep: Prepared, cfg: ForecastConfig, precision: str) -> Prepared:
        """The same window, season, frequency and channels on every rank, or a ConfigError saying which to set."""
        from lstmcast.data.prepare import prepare

        s = prep.series
        mine = {"freq": s.freq, "season": prep.season, "channels": s.channel_names,
                "inputs": int(prep.scaled.shape[1])}
        views = cast(list[dict[str, Any]], self.gather({**mine, "window": prep.window}))  # every rank's `mine`
        for key, fix in (("freq", "data.freq"), ("season", "data.season"),
                         ("channels", "the same columns in every file"), ("inputs", "data.calendar")):
            seen = [v[key] for v in views]
            if any(x != seen[0] for x in seen):
                raise ConfigError(f"data.shard_series: the ranks' series differ in {key} ({seen}, by rank): set {fix} "
                                  "so every rank prepares its series alike")
        window = min(int(v["window"]) for v in views)
        if window != prep.window:  # an auto window fits each rank's shortest series: the smallest fits them all
            log.info("rank %d: window %d (the smallest of the ranks' auto windows)", self.rank, window)
            prep = prepare(s, cfg.data.model_copy(update={"window": window}), precision, cfg.model.id_embedding)
        return prep

    def merge(self, meta: Any, scaler: dict[str, Any], ids: list[str]) -> tuple[Any, dict[str, Any]]:
        """Every series' rows of scaler.json and meta.json, in the sorted order of ``ids`` (all the dataset's)."""
        per = ("ids", "lengths", "train_end", "val_end", "last_time")
        mine = {k: list(getattr(meta, k)) for k in per}
        mine.update(mean=np.asarray(scaler["mean"]).tolist(), std=np.asarray(scaler["std"]).tolist(),
                    anchor=meta.anchor)
        parts = cast(list[dict[str, Any]], self.gather(mine))  # every rank's `mine`
        pos = {sid: i for i, sid in enumerate(ids)}
        rows = [(pos[sid], p, j) for p in parts for j, sid in enumerate(p["ids"])]
        rows.sort(key=lambda r: r[0])
        if len(rows) != len(ids):
            raise ConfigError(f"data.shard_series: the ranks validated {len(rows)} series of the {len(ids)} ids "
                              "read; check that every id names one series")
        merged = {k: [p[k][j] for _, p, j in rows] for k in (*per, "mean", "std")}
        first = min(parts, key=lambda p: pos[p["ids"][0]])  # the first series' first time, as one process
        meta = meta.model_copy(update={**{k: merged[k] for k in per}, "anchor": first["anchor"]})
        scaler = {**scaler, "ids": merged["ids"], "mean": np.asarray(merged["mean"]),
                  "std": np.asarray(merged["std"])}
        return meta, scaler
