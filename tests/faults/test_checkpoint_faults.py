"""FAULTS.md T3 (damaged checkpoint), T4 (unwritable folder, failing write), T7 (pickle), T8 (format version)."""

from __future__ import annotations

import errno
import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import lstmcast
from lstmcast import Forecaster, atomic
from lstmcast.errors import CheckpointError, ConfigError
from lstmcast.run.manifest import sha256_bytes
from lstmcast.training import checkpoint as ck
from lstmcast.training.checkpoint import CheckpointStore, read_checkpoint
from tests.conftest import run_cli, seasonal_frame, small_config

CFG = small_config(train={"precision": "fp32", "checkpoint_every": 4})  # 5 steps an epoch, 15 in all


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A finished run folder with checkpoints step-12 and step-15 (the last two kept)."""
    run = tmp_path_factory.mktemp("ckpt") / "run"
    fc = Forecaster(CFG).fit(seasonal_frame(300), run_dir=run)
    fc.save(run)
    return run


@pytest.fixture
def run(pristine, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(pristine, dst)
    return dst


def ckpt_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:09d}"


def rehash(folder: Path) -> None:
    """Rewrite the manifest so only the deeper checks (safetensors header, JSON schema) can notice damage."""
    m = json.loads((folder / ck.MANIFEST).read_text())
    m["sha256"] = {n: sha256_bytes((folder / n).read_bytes()) for n in (ck.TENSORS, ck.STATE)}
    (folder / ck.MANIFEST).write_text(json.dumps(m))


def test_last_two_checkpoints_kept_each_with_a_manifest(pristine):
    names = [p.name for p in CheckpointStore(pristine).names()]
    assert names == ["step-000000015", "step-000000012"]
    for name in names:
        m = json.loads((pristine / "checkpoints" / name / "manifest.json").read_text())
        assert m["format_version"] == ck.CHECKPOINT_FORMAT and set(m["sha256"]) == {ck.TENSORS, ck.STATE}
    latest = CheckpointStore(pristine).load_latest()
    assert latest.meta["finished"] is True and latest.meta["cursor"] is None
    assert {"torch", "numpy", "python", "generator"} <= set(latest.meta["rng"])
    assert any(k.startswith("optimizer.") for k in latest.tensors)
    assert read_checkpoint(ckpt_dir(pristine, 12)).meta["cursor"]["pos"] == 2  # mid-epoch 3


def test_epoch_end_checkpoints_by_time_and_exact_resume_from_an_epoch_boundary(tmp_path):
    every_epoch = small_config(train={"precision": "fp32", "checkpoint_seconds": 0})
    full = Forecaster(every_epoch).fit(seasonal_frame(300), run_dir=tmp_path / "a")
    assert [p.name for p in CheckpointStore(tmp_path / "a").names()] == ["step-000000015", "step-000000010"]
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpt = read_checkpoint(ckpt_dir(tmp_path / "b", 10))
    assert ckpt.epoch == 2 and ckpt.meta["cursor"] is None
    resumed = Forecaster(every_epoch).fit(seasonal_frame(300), run_dir=tmp_path / "b", resume_from=ckpt)
    assert resumed.history_[:2] == full.history_[:2]  # restored, seconds included
    assert [r["train_loss"] for r in resumed.history_] == [r["train_loss"] for r in full.history_]
    Forecaster(small_config(train={"precision": "fp32"})).fit(seasonal_frame(300), run_dir=tmp_path / "c")
    assert [p.name for p in CheckpointStore(tmp_path / "c").names()] == ["step-000000015"]  # 60 s default: the end


def test_new_fit_into_a_folder_with_checkpoints_of_another_run_is_refused(pristine, tmp_path):
    with pytest.raises(ConfigError, match=r"holds checkpoints of another run: resume it"):
        Forecaster(CFG).fit(seasonal_frame(300), run_dir=pristine)


# -- T3 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "bad_header_rehashed", "bad_json_rehashed",
                                    "missing_manifest"])
def test_damaged_latest_checkpoint_falls_back_to_previous_with_warning(run, damage, caplog):
    latest = ckpt_dir(run, 15)
    blob = latest / ck.TENSORS
    if damage == "flip_byte":
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    elif damage == "truncate":
        blob.write_bytes(blob.read_bytes()[:100])
    elif damage == "bad_header_rehashed":
        data = bytearray(blob.read_bytes())
        data[8:12] = b"{{{{"
        blob.write_bytes(bytes(data))
        rehash(latest)
    elif damage == "bad_json_rehashed":
        (latest / ck.STATE).write_text('{"step": "fifteen"}')
        rehash(latest)
    else:
        (latest / ck.MANIFEST).unlink()
    with caplog.at_level(logging.WARNING, logger="lstmcast.training.checkpoint"):
        got = CheckpointStore(run).load_latest()
    assert got.step == 12
    assert "checkpoint step-000000015 is damaged" in caplog.text
    assert "resuming from the previous good checkpoint step-000000012" in caplog.text


def test_every_checkpoint_damaged_is_a_clear_checkpoint_error(run):
    for step in (12, 15):
        (ckpt_dir(run, step) / ck.STATE).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint in .*step-000000015.*truncated or corrupted"
                                              r".*step-000000012"):
        CheckpointStore(run).load_latest()


def test_resume_after_damage_continues_from_previous_and_sets_damaged_one_aside(run):
    (ckpt_dir(run, 15) / ck.TENSORS).write_bytes(b"garbage")
    store = CheckpointStore(run)
    fc = Forecaster(CFG).fit(seasonal_frame(300), run_dir=run, resume_from=store.load_latest())
    assert (run / "checkpoints" / "set-aside-step-000000015").is_dir()
    assert [p.name for p in store.names()] == ["step-000000015", "step-000000012"]
    reference = Forecaster(CFG).fit(seasonal_frame(300))
    assert [r["train_loss"] for r in fc.history_] == [r["train_loss"] for r in reference.history_]


def test_leftover_temp_folder_from_a_crash_mid_write_is_ignored_then_cleaned(run):
    tmp = run / "checkpoints" / ".step-000000016.tmp-999"
    tmp.mkdir()
    (tmp / ck.TENSORS).write_bytes(b"half")
    store = CheckpointStore(run)
    assert store.load_latest().step == 15
    store.check_writable()  # what a (resumed) training does first
    assert not tmp.exists() and store.load_latest().step == 15


# -- T4 -----------------------------------------------------------------------------------------
def test_failing_write_keeps_previous_checkpoint_and_says_so(monkeypatch, tmp_path):
    real = atomic.write_bytes

    def disk_full(path, data):
        if "step-000000008" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(atomic, "write_bytes", disk_full)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*step-000000008: No space left on device; "
                                              r"the previous checkpoint .*step-000000004 is intact.*--resume"):
        Forecaster(CFG).fit(seasonal_frame(300), run_dir=tmp_path)
    store = CheckpointStore(tmp_path)
    assert [p.name for p in store.names()] == ["step-000000004"]
    assert store.load_latest().step == 4
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp left


def test_unwritable_run_folder_fails_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    steps = []
    monkeypatch.setattr("lstmcast.training.loop.Trainer.run_epoch", lambda self: steps.append(1))
    with pytest.raises(CheckpointError, match=r"cannot write .*a_file/run/checkpoints.*Check free disk space and "
                                              r"that the folder is writable"):
        Forecaster(CFG).fit(seasonal_frame(300), run_dir=blocker / "run")
    assert steps == []


def test_read_only_checkpoint_folder_keeps_previous(tmp_path, monkeypatch):
    """A folder that refuses new files (as chmod -w does; simulated, since root ignores permissions)."""
    import tempfile

    real = tempfile.mkstemp

    def refuse(*args, **kwargs):
        if ".step-000000008" in str(kwargs.get("dir", "")):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(CheckpointError, match=r"Permission denied.*step-000000004 is intact"):
        Forecaster(CFG).fit(seasonal_frame(300), run_dir=tmp_path)
    assert CheckpointStore(tmp_path).load_latest().step == 4


# -- T7 -----------------------------------------------------------------------------------------
@pytest.fixture
def no_unpickling(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)


def test_pickle_files_are_refused_with_the_reason(tmp_path, no_unpickling):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04K\x01.")  # a pickle
    for call in (lambda: lstmcast.load(pt), lambda: CheckpointStore(pt).load_latest(),
                 lambda: read_checkpoint(tmp_path / "last.pkl")):
        with pytest.raises(CheckpointError, match=r"pickle-based file .*never unpickles.*arbitrary code"):
            call()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match=r"only pickle-based checkpoints \['last.ckpt'\].*never unpickles"):
        CheckpointStore(run).load_latest()


def test_loading_run_folder_and_checkpoints_never_unpickles(pristine, no_unpickling):
    assert len(lstmcast.load(pristine).predict(seasonal_frame(300))) == 6
    assert CheckpointStore(pristine).load_latest().step == 15


def test_cli_resume_of_a_pickle_file_exits_4(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04K\x01.")
    res = run_cli("train", "--resume", str(pt))
    assert res.returncode == 4, res.stderr
    assert "never unpickles" in res.stderr and "Traceback" not in res.stderr


# -- T8 -----------------------------------------------------------------------------------------
def test_checkpoint_of_another_format_version_names_both_versions_and_is_not_skipped(run):
    m = ckpt_dir(run, 15) / ck.MANIFEST
    m.write_text(json.dumps({**json.loads(m.read_text()), "format_version": 99}))
    with pytest.raises(CheckpointError, match=r"checkpoint format version 99; this lstmcast reads version 1"):
        CheckpointStore(run).load_latest()


def test_run_folder_of_another_format_version_names_both_versions(run):
    m = run / "manifest.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "format_version": 7}))
    with pytest.raises(CheckpointError, match=r"artifact format version 7; this lstmcast reads version 1"):
        lstmcast.load(run)
