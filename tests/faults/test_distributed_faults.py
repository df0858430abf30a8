"""FAULTS T13 (a distributed rank dies), fast parts: the launcher names the lost rank and gives exit 130 with
the resume hint; the shards of a batch cover it exactly with weights summing to 1 (the slow end-to-end
tests are in tests/integration/test_distributed.py)."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch

from lstmcast.errors import ConfigError, InterruptedRun
from lstmcast.launch import _report, _without_nproc, launch
from lstmcast.training.distributed import Plan, from_env, plan
from lstmcast.training.world import Replicated, Solo


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
    parts = [Replicated(rank=r, world=world, local_world=world).shard(idx, B) for r in range(world)]
    assert torch.equal(torch.cat([p for p, _ in parts]), idx)
    assert sum(w for _, w in parts) == pytest.approx(1.0)
    assert Replicated(rank=0, world=4, local_world=2).threads(8) == 4


def test_t13_a_broken_collective_is_an_interrupted_run_naming_the_rank():
    d = Replicated(rank=1, world=2, local_world=2)

    def broken(*_):
        raise RuntimeError("Connection closed by peer [127.0.0.1]:29500")

    with pytest.raises(InterruptedRun, match=r"rank 1: another rank of the 2 was lost .*--resume RUN"):
        d._call(broken, torch.zeros(1))


# -- NCCL on GPUs, gloo on CPU: the plan each rank joins with (the GPU run itself: tests/integration) --------
@pytest.mark.parametrize("device,gpus", [("cpu", 0), ("cpu", 8), ("auto", 0)])
def test_cpu_ranks_join_with_gloo(device, gpus):
    assert plan(device, local_rank=1, local_world=2, gpus=gpus) == Plan("gloo", "cpu", None)


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_gpu_ranks_join_with_nccl_each_on_its_local_rank_s_gpu(device):
    assert [plan(device, r, 4, gpus=4) for r in range(4)] == [Plan("nccl", "cuda", r) for r in range(4)]
    assert plan(device, 1, 2, gpus=8) == Plan("nccl", "cuda", 1)  # spare GPUs stay unused


def test_auto_with_fewer_gpus_than_local_ranks_trains_on_cpu_and_says_why(caplog):
    with caplog.at_level("WARNING", logger="lstmcast.training.distributed"):
        assert plan("auto", 2, 3, gpus=2) == Plan("gloo", "cpu", None)
    assert "2 GPUs for 3 ranks" in caplog.text and "at most 2 ranks per machine" in caplog.text


def test_cuda_without_a_gpu_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"train.device=cuda but no CUDA GPU is visible.*train.device=cpu"):
        plan("cuda", 0, 2, gpus=0)


def test_cuda_with_fewer_gpus_than_local_ranks_is_refused_naming_both_counts():
    with pytest.raises(ConfigError, match=r"4 ranks on this machine but 2 CUDA GPUs visible.*--nproc 2"):
        plan("cuda", 3, 4, gpus=2)


def test_from_env_binds_the_rank_s_gpu_before_joining_nccl(monkeypatch):
    """The glue torchrun runs on a GPU machine, on CPU: set_device(LOCAL_RANK), then NCCL with that device."""
    import torch.distributed as td

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(td, "is_initialized", lambda: False)
    monkeypatch.setattr(td, "init_process_group",
                        lambda backend, timeout, device_id: calls.append((backend, device_id)))
    dist, how = from_env("cuda")
    assert (dist.rank, dist.world, dist.local_world) == (3, 4, 2) and how == Plan("nccl", "cuda", 1)
    assert calls == [("set_device", 1), ("nccl", torch.device("cuda", 1))]
    calls.clear()
    assert from_env("cpu")[1] == Plan("gloo", "cpu", None) and calls == [("gloo", None)]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="2 ranks on this machine but 1 CUDA GPUs"):
        from_env("cuda")
    assert calls == [("gloo", None)]  # refused before joining any group


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_t13_ctrl_c_at_the_launcher_exits_130_with_the_distributed_resume_command(monkeypatch, capsys, sig):
    """torchrun's agent turns a signal into SignalException after passing it on to the ranks (which checkpoint
    on rank 0 and exit 130, tests/integration/test_distributed.py); the launcher exits 130 too, no traceback."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException

    seen = []

    def interrupted(ns):
        seen.append((ns.nproc_per_node, ns.module, ns.training_script, ns.training_script_args))
        raise SignalException(f"Process 1 got signal: {int(sig)}", sigval=sig)

    monkeypatch.setattr(torchrun, "run", interrupted)
    assert launch(3, ["train", "-c", "c.yaml", "--nproc", "3", "--run", "r"], add_run=False) == 130
    assert seen == [("3", True, "lstmcast.cli", ["train", "-c", "c.yaml", "--run", "r"])]
    err = capsys.readouterr().err
    assert f"{sig.name}: the 3 ranks were stopped" in err and "lstmcast train --resume RUN --nproc 3" in err


def test_the_interrupted_run_s_resume_command_keeps_the_ranks():
    """Ctrl-C under --nproc N: rank 0's message names --nproc N (--resume continues exactly only with the same
    world size); across machines it says to rerun the same torchrun command."""
    assert Solo().resume_hint() == "`"
    assert Replicated(rank=0, world=2, local_world=2).resume_hint() == " --nproc 2`"
    assert "same torchrun command" in Replicated(rank=0, world=4, local_world=2).resume_hint()
