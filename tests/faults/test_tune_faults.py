"""Tuning faults: a diverging or out-of-memory trial fails alone (U3, T6); a killed tuner restarted
fails its stale trial and continues (U1); an interrupted trial is redone on resume; two workers on one
SQLite study claim every trial exactly once (U2, fast; the CLI end-to-end is in tests/integration/test_tune_cli.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch

from lstmcast.config import validate_config
from lstmcast.errors import DivergedError, InterruptedRun
from lstmcast.tuning import study as tuning
from lstmcast.tuning.storage import quiet_optuna_warnings
from lstmcast.tuning.study import TuneOptions, Tuner, no_best_trial_error
from tests.conftest import ROOT, seasonal_frame, small_config

FAIL, COMPLETE, PRUNED, RUNNING = (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE,
                                   optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)


def _cfg(tmp_path: Path, trials: int, epochs: int = 1):
    csv = tmp_path / "s.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    return validate_config(small_config(
        data={"path": str(csv), "window": None},
        train={"max_steps_per_epoch": 3, "threads": 1},
        tune={"trials": trials, "max_epochs": epochs, "pruner": "none", "window_periods": [1, 2], "hidden_size": [4, 8],
              "num_layers": [1, 2], "batch_size": [32]}))


def _sigint_at_epoch_1(trainer, record) -> None:
    trainer.stop.request(signal.SIGINT)  # what the trainer's handler does


def _inject(monkeypatch, faults: dict[int, BaseException | str]) -> None:
    """Trial number -> exception raised by its fit, or "sigint" (a real fit stopped by SIGINT)."""
    real = tuning.fit_trial
    calls = {"n": 0}

    def fit(cfg, series, callbacks):
        n = calls["n"]
        calls["n"] += 1
        if faults.get(n) == "sigint":
            return real(cfg, series, [*callbacks, _sigint_at_epoch_1])
        if n in faults:
            raise faults[n]
        return real(cfg, series, callbacks)

    monkeypatch.setattr(tuning, "fit_trial", fit)


def test_diverging_and_oom_trials_fail_alone(tmp_path, monkeypatch):
    _inject(monkeypatch, {0: DivergedError("every training step of epoch 1 had a non-finite loss"),
                          1: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")})
    seen = []
    with Tuner(_cfg(tmp_path, trials=3), TuneOptions(run_dir=tmp_path / "run")) as tuner:
        summary = tuner.run(on_trial=seen.append)
        trials = tuner.study.get_trials()
    assert [o.state for o in seen] == ["failed (diverged)", "failed (out of memory)", "complete"]
    assert [t.state for t in trials] == [FAIL, FAIL, COMPLETE]
    assert "non-finite" in trials[0].user_attrs["error"] and "out of memory" in trials[1].user_attrs["error"]
    assert summary["best"]["trial"] == 2
    assert (tmp_path / "run" / "best.yaml").exists()


def test_a_study_where_every_trial_diverged_says_so(tmp_path, monkeypatch):
    _inject(monkeypatch, {0: DivergedError("nan"), 1: DivergedError("nan")})
    with Tuner(_cfg(tmp_path, trials=2), TuneOptions(run_dir=tmp_path / "run")) as tuner:
        summary = tuner.run()
    assert summary["best"] is None
    err = no_best_trial_error(summary)
    assert isinstance(err, DivergedError) and err.exit_code == 5
    assert "no trial completed (2 failed (diverged)): lower the top of tune.lr" in str(err)
    assert not (tmp_path / "run" / "best.yaml").exists()


@pytest.mark.parametrize("fault", [KeyboardInterrupt(), "sigint"], ids=["keyboard-interrupt", "sigint-in-fit"])
def test_interrupted_trial_is_redone_on_resume(tmp_path, monkeypatch, fault):
    _inject(monkeypatch, {1: fault})
    cfg = _cfg(tmp_path, trials=2, epochs=2)
    with pytest.raises((KeyboardInterrupt, InterruptedRun), match=None if fault != "sigint" else
                       "trial 1 interrupted by SIGINT: rerun the same command"):
        with Tuner(cfg, TuneOptions(run_dir=tmp_path / "run")) as tuner:
            tuner.run()
    with Tuner(cfg, TuneOptions(run_dir=tmp_path / "run")) as tuner:
        tuner.run()
        trials = tuner.study.get_trials()
    assert [t.state for t in trials] == [COMPLETE, FAIL, COMPLETE]
    assert "failure" not in trials[1].user_attrs  # not the trial's own fault: it does not count


SLOT_HOLDER = """
import sys, time
from lstmcast.tuning.storage import WorkerSlot
print(WorkerSlot(sys.argv[1]).worker_id, flush=True)
time.sleep(120)
"""


def test_a_trial_left_running_by_a_killed_worker_is_failed_and_redone(tmp_path, caplog):
    """U1 (fast): a worker process holding its slot had claimed trial 0 (RUNNING, with its worker id and a
    heartbeat, as Tuner._claim leaves it) and is killed by SIGKILL. While it lives the trial is not stale;
    once it is dead the next worker's run fails it, redoes it, and the study ends with the asked trials."""
    cfg, run = _cfg(tmp_path, trials=2), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    worker = subprocess.Popen([sys.executable, "-c", SLOT_HOLDER, str(run)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        owner = worker.stdout.readline().strip()
        with Tuner(cfg, TuneOptions(run_dir=run, timeout_s=60)) as tuner:  # a hang fails, late
            with quiet_optuna_warnings():
                claimed = tuner.study.ask()
            claimed.set_user_attr("worker", owner)
            tuner.storage.record_heartbeat(claimed._trial_id)
            assert tuner.fail_stale() == []  # its worker still runs: left alone
            worker.kill()
            worker.wait(timeout=30)
            with caplog.at_level(logging.WARNING, logger="lstmcast.tuning.study"):
                summary = tuner.run()
            trials = tuner.study.get_trials()
    finally:
        worker.kill()
        worker.wait()
    assert f"trial 0 was left running by a stopped worker ({owner}): marked failed" in caplog.text
    assert trials[0].state == FAIL and "failure" not in trials[0].user_attrs  # not the trial's fault: redone
    assert [t.state for t in trials[1:]] == [COMPLETE, COMPLETE] and len(trials) == 3
    assert summary["counted_trials"] == 2 and summary["best"] is not None


def test_two_workers_on_one_sqlite_study_claim_every_trial_exactly_once(tmp_path, monkeypatch):
    """U2 (fast): two workers (threads here, each with its own Tuner, storage connection and worker slot) run
    one SQLite study. Their first trials overlap and end together, so both count 2 of 3 trials at once; asking
    is slowed to widen that window, where an unguarded count-then-ask makes 4 trials. The claim lock must give
    exactly trials 0, 1, 2, each run once, by both workers."""
    n = 3
    cfg = _cfg(tmp_path, trials=n)
    real_ask, real_fit, real_results = optuna.Study.ask, tuning.fit_trial, tuning.tuning_report.write_results
    together = threading.Barrier(2, timeout=60)
    firsts: set[int] = set()
    plots = threading.Lock()

    def slow_ask(self, *args, **kwargs):
        time.sleep(0.2)
        return real_ask(self, *args, **kwargs)

    def fit(cfg, series, callbacks):
        first = threading.get_ident() not in firsts
        firsts.add(threading.get_ident())
        if first:
            together.wait()  # each worker's first trial starts once the other has claimed one ...
        fc = real_fit(cfg, series, callbacks)
        if first:
            together.wait()  # ... and ends with the other's: both claim the next trial at the same moment
        return fc

    def results(*args, **kwargs):  # pyplot is not thread-safe; worker processes each have their own
        with plots:
            return real_results(*args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", slow_ask)
    monkeypatch.setattr(tuning, "fit_trial", fit)
    monkeypatch.setattr(tuning.tuning_report, "write_results", results)
    workers = [Tuner(cfg, TuneOptions(run_dir=tmp_path / "run", timeout_s=120)) for _ in range(2)]
    outcomes: list[list] = [[], []]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            workers[i].run(on_trial=outcomes[i].append)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    try:
        for w in workers:
            w.open()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        for w in workers:
            w.close()
    assert not errors and not any(t.is_alive() for t in threads), errors
    assert sorted(o.number for out in outcomes for o in out) == list(range(n))  # none lost, none run twice
    assert all(outcomes)  # both workers ran trials
    trials = optuna.load_study(study_name="lstmcast", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}").get_trials()
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state in (COMPLETE, PRUNED) for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2


@pytest.mark.slow
def test_killed_tuner_restarted_fails_the_stale_trial_and_continues(tmp_path):
    csv = tmp_path / "s.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    run = tmp_path / "run"
    url = f"sqlite:///{run / 'study.db'}"
    args = [sys.executable, "-m", "lstmcast.cli", "tune", "--data", str(csv), "--time-col", "time", "--target", "y",
            "--horizon", "6", "--season", "24", "--trials", "2", "--run", str(run), "--threads", "1",
            "--set", "tune.max_epochs=100", "--set", "tune.pruner=none", "--set", "tune.window_periods=[1,2]",
            "--set", "tune.hidden_size=[4,8]", "--set", "train.max_steps_per_epoch=4", "--set", "train.patience=100"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        running = _wait_for_running_trial(run / "study.db", proc, timeout=120)
        time.sleep(0.2)  # inside the trial: its 100 epochs take seconds
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    restarted = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert restarted.returncode == 0, restarted.stderr
    assert f"trial {running} was left running by a stopped worker" in restarted.stderr
    trials = optuna.load_study(study_name="lstmcast", storage=url).get_trials()
    assert trials[running].state == FAIL and "failure" not in trials[running].user_attrs
    finished = [t for t in trials if t.state in (COMPLETE, PRUNED)]
    assert len(finished) == 2 and len(trials) == 3  # the stale trial was redone, nothing more


def _wait_for_running_trial(db: Path, proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the tuner ended before it could be killed mid-trial"
        try:
            with contextlib.closing(sqlite3.connect(db, timeout=5)) as con:
                rows = con.execute("SELECT number FROM trials WHERE state = 'RUNNING'").fetchall()
        except sqlite3.Error:  # the study tables may not exist yet
            rows = []
        if rows:
            return rows[0][0]
        time.sleep(0.05)
    raise AssertionError("no trial started in time")
