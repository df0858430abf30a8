"""FAULTS T13 (a distributed rank dies), fast parts: the launcher names the lost rank and gives exit 130 with
the resume hint; the shards of a batch cover it exactly with weights summing to 1 (the slow end-to-end
tests are in tests/integration/test_distributed.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lstmcast.errors import InterruptedRun
from lstmcast.launch import _report, _without_nproc
from lstmcast.training.distributed import Distributed


def test_t13_a_rank_killed_by_sigkill_is_named_with_exit_130(capsys):
    exc = SimpleNamespace(failures={1: SimpleNamespace(exitcode=-9, timestamp=10),
                                    0: SimpleNamespace(exitcode=130, timestamp=11)})
    assert _report(exc) == 130
    err = capsys.readouterr().err
    assert "rank 1 was killed by SIGKILL" in err and "lstmcast train --resume RUN --nproc N" in err


def test_a_rank_failing_with_a_data_error_keeps_its_exit_code():
    exc = SimpleNamespace(failures={0: SimpleNamespace(exitcode=3, timestamp=1)})
    assert _report(exc) == 3


def test_the_launcher_drops_its_own_option():
    assert _without_nproc(["train", "--nproc", "2", "--run", "r", "--nproc=3"]) == ["train", "--run", "r"]


@pytest.mark.parametrize("world,B", [(2, 32), (3, 32), (4, 7)])
def test_shards_cover_the_batch_and_their_weights_sum_to_one(world, B):
    idx = torch.arange(B)
    parts = [Distributed(rank=r, world=world, local_world=world).shard(idx) for r in range(world)]
    assert torch.equal(torch.cat([p for p, _ in parts]), idx)
    assert sum(w for _, w in parts) == pytest.approx(1.0)
    assert Distributed(rank=0, world=4, local_world=2).threads(8) == 4


def test_t13_a_broken_collective_is_an_interrupted_run_naming_the_rank():
    d = Distributed(rank=1, world=2, local_world=2)

    def broken(*_):
        raise RuntimeError("Connection closed by peer [127.0.0.1]:29500")

    with pytest.raises(InterruptedRun, match=r"rank 1: another rank of the 2 was lost .*--resume RUN"):
        d._call(broken, torch.zeros(1))
