"""Run-folder damage: FAULTS.md T9 (two writers), T10 (interrupted while writing outputs), T11 (output
targets that are not regular files, modes), U5 (joining a study on other data), H5 (evaluate must not
overwrite the held-out backtest)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lstmcast import atomic
from lstmcast.cli import app
from lstmcast.config import validate_config
from lstmcast.errors import ConfigError, InterruptedRun
from lstmcast.training.signals import interrupt_on_signals
from lstmcast.tuning.study import TuneOptions, Tuner
from tests.conftest import ROOT, seasonal_frame, small_config

OUTPUTS = ("metrics.json", "forecast.csv", "forecast.png", "loss.png", "diagnosis.json", "report.html",
           "complete.json")


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _config_file(d: Path, n: int = 300, seed: int = 0) -> Path:
    csv = d / f"series-{seed}.csv"
    seasonal_frame(n, seed=seed).to_csv(csv, index=False)
    cfg = small_config(data={"path": str(csv)}, train={"max_epochs": 2, "precision": "fp32", "threads": 1},
                       monitor={"tensorboard": False})
    path = d / f"cfg-{seed}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("trained")
    cfg = _config_file(d)
    res = cli("train", "-c", str(cfg), "--run", str(d / "run"))
    assert res.exit_code == 0, res.output
    return {"dir": d, "cfg": cfg, "run": d / "run", "csv": d / "series-0.csv"}


def _copy_run(trained: dict, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    return run


# -- T9: one writer per run folder ---------------------------------------------------------------
HOLDER = """
import sys, time
from lstmcast.run.lock import RunLock
RunLock(sys.argv[1], shared=sys.argv[2] == "shared").acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding RUN/.lock (exclusive, like a running `train`)."""
    procs = []

    def start(folder: Path, shared: bool = False) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), "shared" if shared else "ex"], env=env,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "locked"
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_train_and_resume_into_a_folder_another_process_trains_in_are_refused_naming_it(holder, tmp_path):
    """T9: the second process is refused at once (exit 2) with the holder's pid, host and command."""
    cfg = _config_file(tmp_path)
    run = tmp_path / "run"
    proc = holder(run)
    t0 = time.monotonic()
    for args in (("train", "-c", str(cfg), "--run", str(run)), ("train", "--resume", str(run))):
        res = cli(*args)
        assert res.exit_code == 2, res.output
        assert f"folder {run} is in use by another lstmcast process (pid {proc.pid} on host " \
               f"{socket.gethostname()}" in res.output
        assert "command: " in res.output and "wait for it to finish, or choose another folder" in res.output
    assert time.monotonic() - t0 < 10  # refused at once, no training
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written


def test_a_tune_worker_and_a_train_exclude_each_other_but_tune_workers_share(holder, tmp_path):
    """T9: tune workers hold the folder lock shared; a train (exclusive) is refused while they run."""
    cfg = validate_config(yaml.safe_load(_config_file(tmp_path).read_text()))
    tune_dir = tmp_path / "tune"
    holder(tune_dir, shared=True)
    with Tuner(cfg, TuneOptions(run_dir=tune_dir)):  # a second worker on the same study: allowed
        pass
    res = cli("train", "-c", str(tmp_path / "cfg-0.yaml"), "--run", str(tune_dir))
    assert res.exit_code == 2 and "tuning folder" not in res.output and "is in use by another" in res.output
    holder(tmp_path / "train")
    with pytest.raises(ConfigError, match=r"tuning folder .*train is in use by another lstmcast process \(pid"):
        Tuner(cfg, TuneOptions(run_dir=tmp_path / "train")).__enter__()


def test_the_lock_dies_with_its_holder_even_on_sigkill(holder, tmp_path):
    """T9: the kernel drops a flock when its process dies: no stale lock blocks the next run."""
    from lstmcast.run.lock import RunLock

    proc = holder(tmp_path / "run")
    with pytest.raises(ConfigError, match="in use"):
        RunLock(tmp_path / "run").acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RunLock(tmp_path / "run"):
        assert f'"pid": {os.getpid()}' in (tmp_path / "run" / ".lock").read_text()


@pytest.mark.slow
def test_two_trains_started_together_into_one_run_one_is_refused_nothing_lost(tmp_path):
    """T9, end to end: two real `lstmcast train --run RUN` at once: one trains, the other exits 2."""
    cfg = _config_file(tmp_path)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "lstmcast.cli", "train", "-c", str(cfg), "--run", str(run)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    assert "is in use by another lstmcast process" in next(err for code, err in results if code == 2)
    assert (run / "complete.json").is_file() and cli("predict", str(run)).exit_code == 0


# -- T11: only regular files are ever replaced -------------------------------------------------
def _make(kind: str, path: Path) -> None:
    if kind == "symlink":
        (path.parent / "real.txt").write_text("keep me")
        path.symlink_to(path.parent / "real.txt")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize("kind, words", [("symlink", "a symbolic link"), ("fifo", r"a FIFO \(named pipe\)"),
                                         ("directory", "a directory")])
def test_output_that_is_a_symlink_fifo_or_directory_is_refused_and_untouched(tmp_path, kind, words):
    """T11"""
    target = tmp_path / "out.csv"
    _make(kind, target)
    before = os.lstat(target)
    with pytest.raises(ConfigError, match=f"refusing to write {target}: it is {words}, and lstmcast only ever "
                                          "replaces regular files"):
        atomic.write_text(target, "data")
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    if kind == "symlink":
        assert (tmp_path / "real.txt").read_text() == "keep me"


def test_a_device_is_never_replaced_by_a_file():
    """T11: as root this turned /dev/null into a regular file."""
    with pytest.raises(ConfigError, match="refusing to write /dev/null: it is a character device"):
        atomic.write_text("/dev/null", "data")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_existing_file_keeps_its_mode_and_new_files_honour_the_umask(tmp_path):
    """T11: every file used to come out 0600."""
    old = tmp_path / "old.csv"
    old.write_text("a")
    for mode in (0o644, 0o640, 0o600):
        os.chmod(old, mode)
        atomic.write_text(old, "b")
        assert stat.S_IMODE(os.stat(old).st_mode) == mode and old.read_text() == "b"
    for umask, want in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        prev = os.umask(umask)
        try:
            atomic.write_text(tmp_path / f"new-{umask:o}.json", "{}")
        finally:
            os.umask(prev)
        assert stat.S_IMODE(os.stat(tmp_path / f"new-{umask:o}.json").st_mode) == want


def _between_check_and_rename(monkeypatch, target, existed, renameat2, action):
    """Run ``action`` after lstmcast checked ``target`` and wrote its temp file, before the rename; with
    ``renameat2`` False the lstat-recheck fallback is taken; ``existed``: an old file is there first."""
    if existed:
        target.write_text("old")
    if not renameat2:
        monkeypatch.setattr(atomic, "_renameat2", lambda *a: False)
    write_temp = atomic._write_temp

    def meanwhile(*args):
        tmp = write_temp(*args)
        action()
        return tmp
    monkeypatch.setattr(atomic, "_write_temp", meanwhile)


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "lstat-recheck"])
@pytest.mark.parametrize("existed", [True, False], ids=["over-a-file", "new-file"])
def test_target_swapped_for_a_symlink_during_the_write_is_refused(tmp_path, monkeypatch, renameat2, existed):
    """T11: the check holds at the rename, not only before the write (the target is swapped meanwhile)."""
    target, real = tmp_path / "out.csv", tmp_path / "real.txt"
    real.write_text("keep me")

    def swap():
        target.unlink(missing_ok=True)
        target.symlink_to(real)  # an attacker's swap between the check and the rename
    _between_check_and_rename(monkeypatch, target, existed, renameat2, swap)
    with pytest.raises(ConfigError, match=f"refusing to write {target}"):
        atomic.write_text(target, "data")
    assert target.is_symlink() and real.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "lstat-recheck"])
@pytest.mark.parametrize("existed", [True, False], ids=["over-a-file", "new-file"])
def test_a_regular_file_written_by_another_writer_meanwhile_is_replaced_not_refused(tmp_path, monkeypatch, renameat2,
                                                                                    existed):
    """T11 / U2: two tuning workers write trials.csv, best.yaml and summary.json of one folder; when the other
    worker's atomic write lands between this one's check and rename, the target is still a regular file and
    is replaced (last writer wins). It used to be refused ("a file appeared there"), stopping the worker."""
    target = tmp_path / "trials.csv"

    def other_writer_meanwhile():
        other = tmp_path / "other.tmp"
        other.write_text("the other worker's")
        os.replace(other, target)  # what the other worker's atomic write does
    _between_check_and_rename(monkeypatch, target, existed, renameat2, other_writer_meanwhile)
    atomic.write_text(target, "mine")
    assert target.read_text() == "mine" and not target.is_symlink()
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]  # no temp file left, the swapped-out one gone


def test_predict_out_refuses_a_symlink_and_dash_writes_standard_output(trained, tmp_path):
    """T11 through the CLI: refused before any work (exit 2); `--out -` prints the CSV alone."""
    link = tmp_path / "link.csv"
    _make("symlink", link)
    res = cli("predict", str(trained["run"]), "--out", str(link))
    assert res.exit_code == 2 and "it is a symbolic link" in res.output and "'-' for standard output" in res.output
    assert link.is_symlink() and (tmp_path / "real.txt").read_text() == "keep me"
    res = cli("predict", str(trained["run"]), "--out", "-")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith("time,") and len(res.stdout.splitlines()) == 1 + 6


# -- T10: interrupted while the outputs are written ---------------------------------------------
@pytest.mark.parametrize("stop_at", ["metrics.json", "forecast.png", "diagnosis.json", "report.html",
                                     "complete.json"])
def test_interrupted_while_writing_outputs_then_resume_finishes_them(tmp_path, monkeypatch, stop_at):
    """T10: an interrupt after the model is saved exits 130 with the hint; `--resume` writes the rest
    without retraining; until then a plain `train --run` is refused with the same hint."""
    cfg, run = _config_file(tmp_path), tmp_path / "run"
    real = atomic.write_bytes

    def write(path, data):
        if Path(path).name == stop_at:
            raise KeyboardInterrupt  # what SIGINT does here
        real(path, data)

    monkeypatch.setattr(atomic, "write_bytes", write)
    res = cli("train", "-c", str(cfg), "--run", str(run))
    assert res.exit_code == 130, res.output
    assert f"the trained model is saved: finish the outputs with `lstmcast train --resume {run}`" in res.output
    assert not (run / "complete.json").exists() and (run / "manifest.json").is_file()
    monkeypatch.setattr(atomic, "write_bytes", real)
    res = cli("train", "-c", str(cfg), "--run", str(run))
    assert res.exit_code == 2 and "already holds a trained run whose outputs are incomplete" in res.output
    assert f"write them with `lstmcast train --resume {run}`" in res.output
    model, history = (run / "model.safetensors").read_bytes(), (run / "history.json").read_text()
    res = cli("train", "--resume", str(run))
    assert res.exit_code == 0, res.output
    assert "the model is trained and saved; writing the missing outputs" in res.output
    assert all((run / name).is_file() for name in OUTPUTS), sorted(p.name for p in run.iterdir())
    assert (run / "model.safetensors").read_bytes() == model and (run / "history.json").read_text() == history
    res = cli("train", "--resume", str(run))
    assert res.exit_code == 2 and "already holds a trained run" in res.output


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
@pytest.mark.parametrize("sig, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")])
def test_sigterm_while_writing_outputs_stops_like_sigint(sig, name):
    """T10: SIGTERM in the outputs phase exits 130 with the resume hint (it used to kill silently)."""
    with pytest.raises(InterruptedRun, match=f"^{name}: finish with --resume$"):
        with interrupt_on_signals("finish with --resume"):
            signal.raise_signal(sig)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


KILLER = """
import os, signal, sys
from pathlib import Path
from lstmcast import atomic
real = atomic.write_bytes
def write(path, data):
    if Path(path).name == os.environ["KILL_AT"]:
        os.kill(os.getpid(), int(os.environ["KILL_SIGNAL"]))
    real(path, data)
atomic.write_bytes = write
from lstmcast.cli import app
app(sys.argv[1:], prog_name="lstmcast")
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_at, sig", [("metrics.json", signal.SIGKILL), ("forecast.csv", signal.SIGTERM),
                                          ("report.html", signal.SIGKILL), ("complete.json", signal.SIGKILL)])
def test_real_kill_while_writing_outputs_then_resume_completes(tmp_path, kill_at, sig):
    """T10 with real signals in a real process: kill -9 / SIGTERM, then `train --resume` completes."""
    cfg, run = _config_file(tmp_path), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KILL_AT": kill_at, "KILL_SIGNAL": str(int(sig))}
    res = subprocess.run([sys.executable, "-c", KILLER, "train", "-c", str(cfg), "--run", str(run)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == (130 if sig == signal.SIGTERM else -signal.SIGKILL), res.stderr
    if sig == signal.SIGTERM:
        assert f"SIGTERM: stopped while writing the outputs of {run}" in res.stderr
    env["KILL_AT"] = "-"
    res = subprocess.run([sys.executable, "-c", KILLER, "train", "--resume", str(run)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert all((run / name).is_file() for name in OUTPUTS)


# -- U5: a study is tuned on one data set ------------------------------------------------------
def _tune_cfg(csv: Path):
    return validate_config(small_config(data={"path": str(csv), "window": None}, train={"threads": 1},
                                        tune={"trials": 1, "max_epochs": 1, "pruner": "none"}))


def test_joining_a_study_with_other_data_is_refused_naming_both_files(tmp_path):
    """U5: the fingerprint omitted the data; trials of two data sets mixed and best.yaml named the wrong file."""
    a, b, copy = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "elsewhere" / "a.csv"
    seasonal_frame(300, seed=0).to_csv(a, index=False)
    seasonal_frame(300, seed=1).to_csv(b, index=False)
    copy.parent.mkdir()
    shutil.copy(a, copy)
    opts = TuneOptions(run_dir=tmp_path / "tune")
    with Tuner(_tune_cfg(a), opts):
        pass
    with Tuner(_tune_cfg(copy), opts):  # the same bytes at another path (another machine): the same study
        pass
    sha_a, sha_b = (hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in (a, b))
    with pytest.raises(ConfigError, match=(f"was started with another configuration \\(data: {a} \\(sha256 {sha_a}"
                                           f"\\.\\.\\.\\) in the study, {b} \\(sha256 {sha_b}\\.\\.\\.\\) now\\)")):
        with Tuner(_tune_cfg(b), opts):
            pass
    res = cli("tune", "--data", str(b), "--time-col", "time", "--target", "y", "--run", str(tmp_path / "tune"),
              "--trials", "1")
    assert res.exit_code == 2 and f"{b} (sha256 {sha_b}" in res.output
    assert not (tmp_path / "tune" / "best.yaml").exists()


# -- H5: evaluate never overwrites the held-out backtest ----------------------------------------
def test_evaluate_on_other_data_keeps_the_held_out_metrics_and_labels_the_evaluation(trained, tmp_path):
    """H5: `evaluate RUN --data other.csv` overwrote RUN/metrics.json and the report called it the backtest."""
    run = _copy_run(trained, tmp_path)
    held_out = (run / "metrics.json").read_bytes()
    other = tmp_path / "other.csv"
    seasonal_frame(300, seed=5).to_csv(other, index=False)
    res = cli("evaluate", str(run), "--data", str(other))
    assert res.exit_code == 0, res.output
    assert (run / "metrics.json").read_bytes() == held_out
    [path] = (run / "evaluations").glob("other-*.json")
    assert f"evaluation written to {path}" in res.output.replace("\n", "")
    rec = json.loads(path.read_text())
    assert rec["data"] == str(other) and rec["data_sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert rec["kind"] == "evaluation" and not rec["training_data"] and rec["created"]
    assert rec["metrics"] != json.loads(held_out) and set(rec["metrics"]) == set(json.loads(held_out))
    res = cli("evaluate", str(run), "--name", "again")  # the training data: recomputed, labelled, still separate
    assert res.exit_code == 0 and (run / "metrics.json").read_bytes() == held_out
    assert json.loads((run / "evaluations" / "again.json").read_text())["training_data"] is True
    res = cli("evaluate", str(run), "--name", "again")
    assert res.exit_code == 2 and "choose another --name (evaluations are never overwritten)" in res.output
    assert cli("report", str(run)).exit_code == 0
    page = (run / "report.html").read_text()
    assert page.index('id="metrics"') < page.index('id="evaluations"')
    assert "Not the held-out backtest." in page and str(other) in page
    held = page[page.index('id="metrics"'):page.index('id="evaluations"')]
    model_mae = json.loads(held_out)["model"]["MAE"]
    assert f'data-value="{model_mae!r}"' in held
