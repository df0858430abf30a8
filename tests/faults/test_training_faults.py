"""FAULTS.md T1 (non-finite steps), T2 (kill -9 then resume), T5 (SIGINT/SIGTERM), T6 (out of memory)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from lstmcast import Forecaster
from lstmcast.errors import DivergedError, ResourceError
from lstmcast.model import losses
from lstmcast.training import loop
from lstmcast.training.checkpoint import CheckpointStore, read_checkpoint
from lstmcast.training.guard import Guard
from tests.conftest import ROOT, seasonal_frame, small_config

CURVE = ("epoch", "train_loss", "val_loss", "lr", "grad_norm", "clipped_fraction", "skipped_steps", "steps")


def curve(history: list[dict]) -> list[tuple]:
    return [tuple(r[k] for k in CURVE) for r in history]


def nan_loss_at(steps: set[int] | None, after: int | None = None):
    """An MSE that turns NaN at the given training calls (1-based; one call per step) or from ``after`` on."""
    calls = {"n": 0}

    def loss(pred, y):
        out = F.mse_loss(pred, y)
        if not torch.is_grad_enabled():  # validation
            return out
        calls["n"] += 1
        n = calls["n"]
        if (steps and n in steps) or (after is not None and n > after):
            return out * float("nan")
        return out

    return loss


def guard_config(**train) -> dict:
    # 600 rows -> 12 steps of 32 per epoch; guard checks every 4 steps
    # no linear skip: the model starts untrained, so epoch 1 is the best state these tests look for
    return small_config(train={"precision": "fp32", "max_epochs": 3, "skip_window": 4, "max_skipped_steps": 3,
                               **train}, model={"linear_skip": False})


# -- T1: the non-finite guard -----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained() -> loop.Trainer:
    fc = Forecaster(small_config(train={"precision": "fp32", "max_epochs": 1})).fit(seasonal_frame(300))
    return fc.training_.trainer


def _state(t: loop.Trainer) -> tuple[dict, list]:
    weights = {k: v.clone() for k, v in t.model.state_dict().items()}
    moments = [{k: v.clone() for k, v in t.optimizer.state[p].items()} for p in t.params]
    return weights, moments


def _assert_same(a: tuple[dict, list], b: tuple[dict, list]) -> None:
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    for sa, sb in zip(a[1], b[1]):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("fault", ["nan_loss", "inf_grad"])
def test_nonfinite_step_changes_no_weight_and_no_optimizer_state(trained, fault):
    t = trained
    t.model.train()
    idx = t.data.train_idx[:32]
    t.train_step(idx)  # a good step first: the optimizer has state
    before = _state(t)
    handle = None
    if fault == "nan_loss":
        t.loss_fn = lambda p, y: F.mse_loss(p, y) * float("nan")
    else:
        handle = t.model.head.weight.register_hook(lambda g: g * float("inf"))
    try:
        loss, norm, bad = t.train_step(idx)
    finally:
        t.loss_fn = F.mse_loss
        if handle is not None:
            handle.remove()
    assert bad.item() == 1.0
    assert not math.isfinite(norm.item())
    _assert_same(before, _state(t))
    _, _, bad = t.train_step(idx)  # and the next good step does update
    assert bad.item() == 0.0
    assert not torch.equal(before[0]["head.weight"], t.model.state_dict()["head.weight"])


def test_repeated_nonfinite_steps_roll_back_to_last_good_state_and_halve_lr(monkeypatch):
    # steps 13-15 (epoch 2) are NaN: the check at step 16 sees 3 >= max_skipped_steps and rolls back
    monkeypatch.setitem(losses.LOSSES, "mse", nan_loss_at({13, 14, 15}))
    end_of_epoch1, after_rollback = {}, {}
    real_rollback = Guard.rollback

    def spy(guard, stats):
        before = {k: v.clone() for k, v in guard.parts.model.state_dict().items()}
        real_rollback(guard, stats)
        after_rollback.update(stats=stats, before=before,
                              weights={k: v.clone() for k, v in guard.parts.model.state_dict().items()})

    monkeypatch.setattr(Guard, "rollback", spy)

    def remember(trainer, rec):
        if rec.epoch == 1:
            end_of_epoch1.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    fc = Forecaster(guard_config()).fit(seasonal_frame(600), callbacks=[remember])
    assert after_rollback["stats"]["step"] == 16 and after_rollback["stats"]["skipped"] == 3
    for k, v in end_of_epoch1.items():
        assert torch.equal(after_rollback["weights"][k], v), k  # back to the last good state
    assert any(not torch.equal(after_rollback["before"][k], v) for k, v in end_of_epoch1.items())
    h = fc.history_
    assert h[0]["lr"] == pytest.approx(1e-3) and h[1]["lr"] == pytest.approx(5e-4)  # lr * rollback_lr_factor
    assert h[1]["skipped_steps"] == 3 and h[1]["rollbacks"] == 1
    assert fc.training_.result.stop_reason == "reached max_epochs=3"  # and training went on
    assert fc.training_.trainer.guard.events[0]["rolled_back_to_step"] == 12


def test_persistent_nonfinite_stops_with_diverged_report_and_keeps_best_weights(monkeypatch, tmp_path):
    monkeypatch.setitem(losses.LOSSES, "mse", nan_loss_at(None, after=12))  # NaN from epoch 2 on
    best = {}

    def remember(trainer, rec):
        best.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    with pytest.raises(DivergedError, match=r"training diverged: .* after 2 rollback\(s\).*lower the learning rate"):
        Forecaster(guard_config(max_rollbacks=2)).fit(seasonal_frame(600), callbacks=[remember], run_dir=tmp_path)
    report = json.loads((tmp_path / "diverged.json").read_text())
    assert report["step"] == 24 and report["epoch"] == 2
    assert report["lr"] == pytest.approx(2.5e-4)  # 1e-3 halved twice
    assert [e["lr_after"] for e in report["rollbacks"]] == pytest.approx([5e-4, 2.5e-4])
    assert report["grad_norms"] and report["grad_norms"][-1]["skipped"] == 4
    assert any("train.lr=" in c for c in report["cure"])
    assert report["best"]["epoch"] == 1
    ckpt = read_checkpoint(report["best"]["checkpoint"])  # the best weights are kept
    assert ckpt.meta["note"] == "diverged"
    for k, v in best.items():
        assert torch.equal(ckpt.tensors[f"best.{k}"], v), k


# -- CLI helpers: a wrapper that signals itself at step k ----------------------------------------
WRAPPER = """
import os, sys
from lstmcast.model import losses
from lstmcast.training import loop
k, sig = int(os.environ["FAULT_AT_STEP"]), int(os.environ["FAULT_SIGNAL"])
real = loop.Trainer.train_step
def step(self, idx):
    out = real(self, idx)
    if self.state.step + 1 == k:  # step k has been computed; the loop has not counted it yet
        os.kill(os.getpid(), sig)
    return out
loop.Trainer.train_step = step
if os.environ.get("FAULT_NAN_AFTER"):
    import torch.nn.functional as F
    n = int(os.environ["FAULT_NAN_AFTER"])
    calls = [0]
    def mse(p, y):
        import torch
        if torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] > n:
                return F.mse_loss(p, y) * float("nan")
        return F.mse_loss(p, y)
    losses.LOSSES["mse"] = mse
from lstmcast.cli import app
app(sys.argv[1:], prog_name="lstmcast")
"""


def lstmcast(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FAULT_AT_STEP": "0",
                "FAULT_SIGNAL": str(int(signal.SIGKILL)), **(env or {})}
    return subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory) -> dict:
    """Data, a config file and the uninterrupted loss curve (the same library code, in-process)."""
    d = tmp_path_factory.mktemp("resume")
    csv = d / "series.csv"
    seasonal_frame(360).to_csv(csv, index=False)
    cfg = plateau_config(path=str(csv), max_epochs=6)
    (d / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    Forecaster(cfg).fit(str(csv), run_dir=d / "reference")
    final = CheckpointStore(d / "reference").load_latest()
    history = final.meta["history"]
    return {"dir": d, "cfg": d / "cfg.yaml", "curve": curve(history), "final": final.meta,
            "steps": final.step, "per_epoch": history[0]["steps"]}


def plateau_config(path: str | None = None, max_epochs: int = 5) -> dict:
    """A run whose learning rate halves mid-run, so a resume that lost the scheduler or early-stopping
    state shows in the curve: lr 1e-6 keeps the validation loss on a plateau (it improves by < 1e-4
    relative, ReduceLROnPlateau's threshold), so with patience 6 (scheduler patience 2) the rate halves
    after epoch 4; min_delta 1e-3 makes early stopping count bad epochs from epoch 2 on."""
    return small_config(data={"window": 12, "horizon": 3, "season": 24, **({"path": path} if path else {})},
                        model={"hidden_size": 8, "num_layers": 2, "dropout": 0.2},
                        train={"precision": "fp32", "max_epochs": max_epochs, "batch_size": 16, "lr": 1e-6,
                               "checkpoint_every": 5, "patience": 6, "min_delta": 1e-3})


def resumable_state(meta: dict) -> dict:
    """What a resume must restore beyond the weights: scheduler, early stopping, the learning rate."""
    return {"scheduler": meta["scheduler"], "early_stopping": meta["early_stopping"],
            "lr": [h["lr"] for h in meta["history"]], "step": meta["step"]}


def lr_changed_before(history: list[dict], step: int) -> bool:
    """Did the scheduler change the learning rate at an epoch end at or before optimizer step ``step``?
    (An epoch's record holds the rate it trained with: a change at the end of epoch e shows in e + 1.)"""
    done = 0
    for before, after in zip(history, history[1:]):
        done += before["steps"]
        if after["lr"] != before["lr"]:
            return done <= step
    return False


class Killed(BaseException):
    """Stands for kill -9 in-process: nothing in lstmcast catches it, so nothing more is written."""


def test_resume_after_a_crash_restores_the_halved_lr_and_early_stopping_state(monkeypatch, tmp_path):
    """T2 (fast, in-process): the run dies after the plateau halved the learning rate; the resumed run
    must continue with the halved rate, the scheduler's and early stopping's counters, and end equal."""
    df, cfg = seasonal_frame(200), plateau_config()
    Forecaster(cfg).fit(df, run_dir=tmp_path / "full")
    full = CheckpointStore(tmp_path / "full").load_latest().meta
    per_epoch = full["history"][0]["steps"]
    k = 4 * per_epoch + 3  # in epoch 5, after the halving (end of epoch 4) and a checkpoint (every 5 steps)
    real = loop.Trainer.train_step

    def step(self, idx):
        if self.state.step + 1 == k:
            raise Killed
        return real(self, idx)

    monkeypatch.setattr(loop.Trainer, "train_step", step)
    with pytest.raises(Killed):
        Forecaster(cfg).fit(df, run_dir=tmp_path / "run")
    monkeypatch.undo()
    ckpt = CheckpointStore(tmp_path / "run").load_latest()
    assert 4 * per_epoch < ckpt.step < k
    assert lr_changed_before(full["history"], ckpt.step), [h["lr"] for h in full["history"]]
    assert ckpt.meta["early_stopping"]["bad_epochs"] > 0 and ckpt.meta["scheduler"]["_last_lr"] == [5e-7]
    Forecaster(cfg).fit(df, run_dir=tmp_path / "run", resume_from=ckpt)
    resumed = CheckpointStore(tmp_path / "run").load_latest().meta
    assert curve(resumed["history"]) == curve(full["history"])
    assert resumable_state(resumed) == resumable_state(full)


def _history(run: Path) -> list[dict]:
    return json.loads((run / "history.json").read_text())


# -- T2: kill -9 at a random step, then resume ---------------------------------------------------
@pytest.mark.slow
def test_sigkill_at_random_step_then_resume_equals_uninterrupted_curve(cli_setup, tmp_path):
    total, per_epoch = cli_setup["steps"], cli_setup["per_epoch"]
    # a random step whose last checkpoint comes after the plateau halved the rate (end of epoch 4)
    k = random.Random(os.getpid()).randrange(4 * per_epoch + 6, total - 1)
    run = tmp_path / "run"
    killed = lstmcast("train", "-c", str(cli_setup["cfg"]), "--run", str(run),
                      env={"FAULT_AT_STEP": str(k), "FAULT_SIGNAL": str(int(signal.SIGKILL))})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run / "manifest.json").exists()
    last = CheckpointStore(run).load_latest().step
    assert last == ((k - 1) // 5) * 5, (k, last)  # checkpoints every 5 steps: at most 5 steps were lost
    resumed = lstmcast("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} from step-{last:09d}" in resumed.stderr
    assert lr_changed_before(cli_setup["final"]["history"], last), "the kill must come after the lr changed"
    assert curve(_history(run)) == cli_setup["curve"], f"killed at step {k}, resumed from {last}"
    assert resumable_state(CheckpointStore(run).load_latest().meta) == resumable_state(cli_setup["final"])


# -- T5: SIGINT / SIGTERM ------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_exits_130_and_resumes_exactly(cli_setup, tmp_path):
    per_epoch = cli_setup["per_epoch"]
    run, k = tmp_path / "run", per_epoch + 3  # mid-epoch 2, not a checkpoint step
    assert k % 5
    stopped = lstmcast("train", "-c", str(cli_setup["cfg"]), "--run", str(run),
                       env={"FAULT_AT_STEP": str(k), "FAULT_SIGNAL": str(int(signal.SIGTERM))})
    assert stopped.returncode == 130, stopped.stderr
    assert f"SIGTERM: stopped after step {k} " in stopped.stderr and f"--resume {run}" in stopped.stderr
    ckpt = CheckpointStore(run).load_latest()
    assert ckpt.step == k and ckpt.meta["cursor"]["pos"] == 3  # the step finished, then checkpointed
    resumed = lstmcast("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert curve(_history(run)) == cli_setup["curve"]


@pytest.mark.slow
def test_sigint_from_outside_checkpoints_and_exits_130(cli_setup, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "lstmcast.cli", "train", "-c", str(cli_setup["cfg"]),
                             "--run", str(run), "--set", "train.max_epochs=100000", "--set", "train.patience=100000",
                             "--set", "train.checkpoint_every=2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not CheckpointStore(run).names() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "SIGINT: stopped after step" in err
    ckpt = CheckpointStore(run).load_latest()
    # the checkpoint of the stop: mid-epoch with its cursor, or (a signal that lands during an epoch's validation)
    # at that epoch's end, where there is no cursor to keep
    assert ckpt.meta["finished"] is False
    assert ckpt.meta["cursor"] is not None or ckpt.step % cli_setup["per_epoch"] == 0, (ckpt.step, ckpt.meta["cursor"])
    assert f"stopped after step {ckpt.step} " in err


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_real_signal_mid_epoch_finishes_the_step_checkpoints_and_exits_130(tmp_path, monkeypatch, sig):
    """T5 (fast, in-process CLI): a real SIGTERM / SIGINT delivered to this process during step k of
    `lstmcast train` lets step k finish, checkpoints it with the epoch cursor, exits 130 naming the signal and
    the resume command; resuming from that checkpoint ends on the uninterrupted loss curve."""
    from typer.testing import CliRunner

    from lstmcast.cli import app

    csv = tmp_path / "series.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    cfg = small_config(data={"path": str(csv)}, train={"precision": "fp32", "checkpoint_every": 4, "threads": 1},
                       monitor={"tensorboard": False})  # 5 steps an epoch, 15 in all
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    full = Forecaster(cfg).fit(str(csv), run_dir=tmp_path / "full")
    k, run = 7, tmp_path / "run"  # mid-epoch 2, after the checkpoint of step 4, not a checkpoint step itself
    real = loop.Trainer.train_step

    def step(self, idx):
        out = real(self, idx)
        if self.state.step + 1 == k:  # step k has been computed; the loop has not counted it yet
            signal.raise_signal(sig)
        return out

    unhandled = []  # lstmcast must route the signal itself; without that the default would end pytest
    previous = signal.signal(sig, lambda signum, frame: unhandled.append(signum))
    monkeypatch.setattr(loop.Trainer, "train_step", step)
    try:
        res = CliRunner().invoke(app, ["train", "-c", str(tmp_path / "cfg.yaml"), "--run", str(run)])
    finally:
        signal.signal(sig, previous)
    monkeypatch.undo()
    name = signal.Signals(sig).name
    assert unhandled == [] and res.exit_code == 130, res.output
    assert f"{name}: stopped after step {k} (epoch 2), checkpoint written" in res.output
    assert f"continue with `lstmcast train --resume {run}`" in res.output
    assert not (run / "manifest.json").exists()  # stopped: no finished run folder
    ckpt = CheckpointStore(run).load_latest()
    assert ckpt.step == k and ckpt.meta["finished"] is False and ckpt.meta["cursor"]["pos"] == 2
    resumed = Forecaster(cfg).fit(str(csv), run_dir=run, resume_from=ckpt)
    assert curve(resumed.history_) == curve(full.history_)


# -- T1 through the CLI: exit code 5 --------------------------------------------------------------
@pytest.mark.slow
def test_cli_divergence_exits_5_and_writes_diverged_json(cli_setup, tmp_path):
    run = tmp_path / "run"
    res = lstmcast("train", "-c", str(cli_setup["cfg"]), "--run", str(run), "--set", "train.max_rollbacks=1",
                   "--set", "train.skip_window=3", "--set", "train.max_skipped_steps=3", env={"FAULT_NAN_AFTER": "10"})
    assert res.returncode == 5, res.stderr
    assert "error (DivergedError): training diverged" in res.stderr and "diverged.json" in res.stderr
    report = json.loads((run / "diverged.json").read_text())
    assert report["rollbacks"] and report["cure"]
    assert read_checkpoint(report["best"]["checkpoint"]).meta["note"] == "diverged"


# -- T6: out of memory ---------------------------------------------------------------------------
def test_out_of_memory_is_a_clear_error_naming_the_cures(monkeypatch, tmp_path):
    real = loop.Trainer.train_step

    def step(self, idx):
        if self.state.step == 6:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, idx)

    monkeypatch.setattr(loop.Trainer, "train_step", step)
    with pytest.raises(ResourceError, match=r"out of memory .* at step 6 with train.batch_size=32.*lower "
                                            r"train.batch_size or data.window.*bf16.*step-000000004 is intact"):
        Forecaster(small_config(train={"precision": "fp32", "checkpoint_every": 4})).fit(seasonal_frame(300),
                                                                                         run_dir=tmp_path)
    assert ResourceError.exit_code == 2 and issubclass(ResourceError, MemoryError)
