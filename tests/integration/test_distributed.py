"""Distributed training (issue 14): `lstmcast train --nproc 2` (gloo, 2 ranks on localhost) follows the loss
curve of one process with the same global batch, records the world size, and a rank killed with SIGKILL
stops the others naming it, after which --resume completes (FAULTS T13)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import run_cli, seasonal_frame, small_config

pytestmark = pytest.mark.slow


def _setup(tmp_path: Path, skip: bool = True, **train) -> Path:
    seasonal_frame(400).to_csv(tmp_path / "data.csv", index=False)
    cfg = small_config(train={"precision": "fp32", "threads": 1, **train})
    cfg["data"]["path"] = str(tmp_path / "data.csv")
    cfg["monitor"] = {"tensorboard": False}
    cfg["model"]["linear_skip"] = skip  # without the fitted skip step 0 never wins, so the refit trains
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_ranks_follow_the_one_process_loss_curve_and_record_the_world_size(tmp_path):
    cfg = _setup(tmp_path, skip=False, refit=True, max_epochs=3)
    one = run_cli("train", "-c", str(cfg), "--run", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = run_cli("train", "-c", str(cfg), "--run", str(tmp_path / "two"), "--nproc", "2")
    assert two.returncode == 0, two.stderr
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    h1, h2 = (h if isinstance(h, list) else h["history"] for h in (h1, h2))
    assert len(h1) == len(h2) == 3
    for a, b in zip(h1, h2):  # per-rank batch 16 x 2 ranks = one process at batch 32
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    meta1 = json.loads((tmp_path / "one" / "meta.json").read_text())
    meta2 = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta1["world_size"] == 1 and meta2["world_size"] == 2
    assert meta2["refit"]["steps"] == meta1["refit"]["steps"] > 0  # the refit ran on both ranks
    import pandas as pd

    f1, f2 = (pd.read_csv(tmp_path / r / "forecast.csv") for r in ("one", "two"))  # the refitted model's
    assert f2["y"].to_numpy() == pytest.approx(f1["y"].to_numpy(), rel=1e-4)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


def test_t13_a_killed_rank_stops_the_others_naming_it_and_resume_completes(tmp_path):
    cfg = _setup(tmp_path, max_epochs=400, patience=400, checkpoint_every=5, refit=False)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "lstmcast.cli", "train", "-c", str(cfg), "--run", str(run),
                             "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not any((run / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - t0 < 90  # bounded: the others stop, nobody waits for the dead rank
    assert proc.returncode == 130, err[-2000:]
    assert "rank 1 was killed by SIGKILL" in err and "--resume" in err
    assert not (run / "complete.json").exists()
    cfg_short = _setup(tmp_path, max_epochs=400, patience=400, checkpoint_every=5, refit=False)
    del cfg_short  # same file: the resumed run keeps the saved config; finish sooner with max_epochs
    res = run_cli("train", "--resume", str(run), "--nproc", "2", "--set", "train.max_epochs=4")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run / "complete.json").exists()
    assert json.loads((run / "meta.json").read_text())["world_size"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="NCCL across 2 ranks needs 2 CUDA GPUs")
def test_two_gpu_ranks_train_with_nccl_and_follow_the_one_gpu_loss_curve(tmp_path):
    cfg = _setup(tmp_path, skip=False, refit=False, max_epochs=3, device="cuda", accel="eager")
    one = run_cli("train", "-c", str(cfg), "--run", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = run_cli("train", "-c", str(cfg), "--run", str(tmp_path / "two"), "--nproc", "2")
    assert two.returncode == 0, two.stderr
    h1, h2 = (json.loads((tmp_path / r / "history.json").read_text()) for r in ("one", "two"))
    h1, h2 = (h if isinstance(h, list) else h["history"] for h in (h1, h2))
    assert len(h1) == len(h2) == 3
    for a, b in zip(h1, h2):  # GPU kernels sum in their own order: looser than the CPU test's 1e-4
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    assert json.loads((tmp_path / "two" / "meta.json").read_text())["world_size"] == 2


# -- faults of issue 14 end to end: ranks started by torchrun itself, the test's faults injected by dist_rank.py --
DIST_RANK = Path(__file__).with_name("dist_rank.py")


def _torchrun(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")  # the venv's console script, else the module it runs
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "torch.distributed.run", *args]


def _rank_run(cfg: Path, run: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """2 ranks on localhost, each dist_rank.py: the CLI with the faults ``env`` asks for. ``--`` ends torchrun's
    options: without it torchrun's parser refuses lstmcast's `--run` (a prefix of its own `--run-path`)."""
    cmd = _torchrun("--standalone", "--nproc-per-node", "2", str(DIST_RANK), "--", "train", "-c", str(cfg),
                    "--run", str(run))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _history(run: Path) -> list[dict]:
    h = json.loads((run / "history.json").read_text())
    return h if isinstance(h, list) else h["history"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_t13_a_rank_killed_mid_epoch_then_resume_ends_with_the_uninterrupted_run_s_weights(tmp_path):
    """Bit for bit (torch.equal): resume restores weights, optimizer, scheduler, RNG and the epoch's position,
    and both runs sum the same two shards in the same order, so no rounding may differ."""
    cfg = _setup(tmp_path, skip=False, max_epochs=3, patience=10, checkpoint_every=3, refit=False)
    full = run_cli("train", "-c", str(cfg), "--run", str(tmp_path / "full"), "--nproc", "2")
    assert full.returncode == 0, full.stderr[-3000:]
    steps = [r["steps"] for r in _history(tmp_path / "full")]
    val = [r["val_loss"] for r in _history(tmp_path / "full")]
    assert val.index(min(val)) >= 1  # the saved (best) weights are of epoch 2 or 3: trained after the kill
    at = steps[0] + steps[1] // 2 + 1  # mid-epoch 2, after the checkpoint at a multiple of 3 before it
    run = tmp_path / "part"
    killed = _rank_run(cfg, run, {"LSTMCAST_TEST_KILL_RANK": "1", "LSTMCAST_TEST_KILL_STEP": str(at)})
    assert killed.returncode != 0 and "Signal 9 (SIGKILL)" in killed.stderr, killed.stderr[-3000:]
    assert not (run / "complete.json").exists()
    last = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    assert last == at - at % 3 < at  # rank 0 checkpointed, then lost rank 1 before step `at` finished
    res = run_cli("train", "--resume", str(run), "--nproc", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"(epoch 2, step {last})" in res.stderr  # resumed mid-epoch
    assert _same(_weights(run / "model.safetensors"), _weights(tmp_path / "full" / "model.safetensors"))
    assert [r["val_loss"] for r in _history(run)] == [r["val_loss"] for r in _history(tmp_path / "full")]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_rendezvous_on_localhost_and_follow_the_one_process_loss_curve(tmp_path):
    cfg = _setup(tmp_path, skip=False, refit=False, max_epochs=2)
    one = run_cli("train", "-c", str(cfg), "--run", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    endpoint, run = f"127.0.0.1:{_free_port()}", tmp_path / "two"
    nodes = [subprocess.Popen(_torchrun("--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(n),
                                        "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "t",
                                        "-m", "lstmcast.cli", "--", "train", "-c", str(cfg), "--run", str(run)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (0, 1)]
    outs = [p.communicate(timeout=300) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], [err[-2000:] for _, err in outs]
    assert json.loads((run / "meta.json").read_text())["world_size"] == 2
    assert (run / "complete.json").exists()
    h1, h2 = _history(tmp_path / "one"), _history(run)
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)


def test_a_non_finite_loss_on_one_rank_rolls_every_rank_back_together(tmp_path):
    """Only rank 1's loss is NaN (steps 5 and 6: 2 skipped steps since the check at step 4, a rollback at the
    check of epoch 1's end (7 steps an epoch) to the snapshot of step 4; step 13: one skipped step, no
    rollback); the all-reduced loss and gradients carry it to rank 0, whose own shards were finite, so both
    skip the same steps, roll back at the same check and end with the same weights."""
    cfg = _setup(tmp_path, skip=False, max_epochs=3, patience=10, checkpoint_every=4, skip_window=4,
                 max_skipped_steps=2, refit=False)
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    res = _rank_run(cfg, run, {"LSTMCAST_TEST_NAN_RANK": "1", "LSTMCAST_TEST_NAN_STEPS": "5,6,13",
                               "LSTMCAST_TEST_OUT": str(out)})
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["steps"] for r in ranks[0]] == [7, 7, 7]
    assert [(r["skipped_steps"], r["rollbacks"]) for r in ranks[0]] == [(2, 1), (1, 1), (0, 1)]
    val = [r["val_loss"] for r in ranks[0]]
    assert val.index(min(val)) >= 1  # the final (best) weights were trained after the rollback
    for a, b in zip(*ranks):
        a.pop("seconds"), a.pop("samples_per_s"), b.pop("seconds"), b.pop("samples_per_s")
    assert ranks[0] == ranks[1]  # skipped steps, rollbacks, losses, learning rates: equal to the bit
    assert res.stderr.count("rolled back to the state of step 4") == 2  # logged by each rank
    w0, w1 = _weights(out / "rank0.safetensors"), _weights(out / "rank1.safetensors")
    assert _same(w0, w1)
    saved = _weights(run / "model.safetensors")
    assert saved.keys() == w0.keys() and all(torch.equal(saved[k], w0[k]) for k in w0)


def test_t13_ctrl_c_checkpoints_once_on_rank_0_exits_130_and_resume_continues(tmp_path):
    """Ctrl-C in a terminal signals the launcher's process group (the ranks have their own sessions)."""
    cfg = _setup(tmp_path, max_epochs=400, patience=400, checkpoint_every=0, checkpoint_seconds=1e6, refit=False)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "lstmcast.cli", "train", "-c", str(cfg), "--run", str(run),
                             "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not any("[train] epoch" in ln for ln in lines) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # an epoch's progress line: training is under way on both ranks
    assert proc.poll() is None, "".join(lines)[-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130, "".join(lines)[-3000:]
    reader.join(timeout=10)
    err = "".join(lines)
    assert "Traceback" not in err, err[-3000:]
    saved = list((run / "checkpoints").glob("step-*"))
    assert len(saved) == 1, saved  # none before (checkpoint_seconds: 1e6), one on the signal, by rank 0 alone
    stopped = re.search(r"SIGINT: stopped after step (\d+) \(epoch (\d+)\), checkpoint written to (\S+);", err)
    assert stopped and Path(stopped[3]).name == saved[0].name and err.count("checkpoint written to") == 1, err
    assert "rank 1: interrupted by SIGINT" in err  # rank 1 stopped through InterruptedRun too: its exit 130
    assert "SIGINT: the 2 ranks were stopped" in err and "--resume RUN --nproc 2" in err
    step, epoch = int(stopped[1]), int(stopped[2])
    res = run_cli("train", "--resume", str(run), "--nproc", "2", "--set", f"train.max_epochs={epoch + 1}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"(epoch {epoch}, step {step})" in res.stderr and (run / "complete.json").exists()
    assert len(_history(run)) == epoch + 1
