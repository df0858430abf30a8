"""Issue 21, items 9-14 (FAULTS R9-R14): weak answers of a hostile trial. A run folder's stored data path is
not trusted, data errors echo only short excerpts, tampered artifacts are refused, atomic writes leave no temp
file behind, states that cannot be resumed are refused before training, and paths of the wrong kind are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import lstmcast
from lstmcast import Forecaster
from lstmcast.errors import CheckpointError, ConfigError, DataError
from tests.conftest import seasonal_frame, small_config
from tests.faults.run_fixtures import rehash, save_trained_run

SECRET = "root:$6$SECRETSALT$SECRETHASH:19000:0:99999:7:::"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A saved run folder (with its checkpoints) and its data file series.csv."""
    return save_trained_run(tmp_path_factory.mktemp("r3"))


@pytest.fixture
def run(pristine, tmp_path) -> Path:
    shutil.copytree(pristine / "run", tmp_path / "run")
    return tmp_path / "run"


def point_data_path_at(run: Path, target: Path) -> None:
    text = (run / "config.yaml").read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("path:"))
    (run / "config.yaml").write_text(text.replace(line, line.split("path:")[0] + f"path: {target}"))
    rehash(run)


# -- R9: a data path stored in a run folder is not trusted like a typed one -------------------------------
@pytest.mark.parametrize("content", [SECRET + "\n", f"time,y\n{SECRET},1\n"])
def test_r9_a_rehashed_data_path_pointing_at_a_secret_is_never_read(run, tmp_path, content):
    secret = tmp_path / "shadow"
    secret.write_text(content)
    point_data_path_at(run, secret)
    fc = lstmcast.load(run)
    for call in (fc.predict, fc.backtest):
        with pytest.raises(ConfigError, match=r"data.path .*shadow' was not recorded with its sha256.* --data") as err:
            call()
        assert "SECRET" not in str(err.value)


def test_r9_the_recorded_training_data_is_read_while_unchanged_and_refused_once_changed(run, pristine, tmp_path):
    record = json.loads((run / "manifest.json").read_text())["data"]
    assert record["path"] == str(pristine / "series.csv") and len(record["sha256"]) == 64
    assert len(lstmcast.load(run).predict()) == 6  # the unchanged training file: read as before
    changed = tmp_path / "series.csv"
    seasonal_frame(300, seed=1).to_csv(changed, index=False)
    m = json.loads((run / "manifest.json").read_text())
    m["data"]["path"] = str(changed)  # the record names the file, but its bytes differ from the hash
    (run / "manifest.json").write_text(json.dumps(m))
    point_data_path_at(run, changed)
    with pytest.raises(ConfigError, match=r"gone or changed since training .*--data"):
        lstmcast.load(run).predict()
    assert len(lstmcast.load(run).predict(str(changed))) == 6  # typed: trusted


def test_r9_resume_reads_the_checkpoint_s_data_path_only_while_unchanged(run, tmp_path):
    from lstmcast.run.manifest import sha256_bytes as sha256
    from lstmcast.training.checkpoint import CheckpointStore
    from lstmcast.training.resume import resume_config

    cfg, ckpt = resume_config(run)  # untouched: the recorded training file is read
    assert ckpt.meta["data_file"]["path"] == cfg.data.path
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\n")
    for folder in CheckpointStore(run).names():
        state = json.loads((folder / "state.json").read_text())
        state["config"]["data"]["path"] = str(secret)
        blob = json.dumps(state).encode()
        (folder / "state.json").write_bytes(blob)
        m = json.loads((folder / "manifest.json").read_text())
        m["sha256"]["state.json"] = sha256(blob)
        (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match=r"data.path .*shadow' was not recorded with its sha256") as err:
        resume_config(run)
    assert "SECRET" not in str(err.value)
    cfg, _ = resume_config(run, data_flags={"path": ckpt.meta["data_file"]["path"]})  # typed: trusted
    assert cfg.data.path == ckpt.meta["data_file"]["path"]


# -- R10: data errors echo short excerpts only -------------------------------------------------------------
def _fit_error(tmp_path: Path, frame: pd.DataFrame, **data) -> str:
    csv = tmp_path / "d.csv"
    frame.to_csv(csv, index=False)
    with pytest.raises(DataError) as err:
        Forecaster(small_config(data={"path": str(csv), **data})).fit(str(csv))
    return str(err.value)


def test_r10_a_huge_cell_is_cut_to_a_short_excerpt(tmp_path):
    df = seasonal_frame(100)
    df["y"] = df["y"].astype(object)
    df.loc[5, "y"] = "x" * 1_000_000
    msg = _fit_error(tmp_path, df)
    assert len(msg) < 400 and "'xxxx" in msg and "line 7" in msg
    df = seasonal_frame(100)
    df["time"] = df["time"].astype(str)
    df.loc[5, "time"] = "t" * 1_000_000
    msg = _fit_error(tmp_path, df)
    assert len(msg) < 600 and "unparseable timestamps, first 'tttt" in msg


def test_r10_huge_column_names_are_cut_in_every_listing(tmp_path):
    df = seasonal_frame(100).rename(columns={"y": "y" * 100_000})
    msg = _fit_error(tmp_path, df)
    assert len(msg) < 400 and "Columns present: 'time', 'yyy" in msg
    df = pd.concat([seasonal_frame(100), pd.DataFrame({f"c{k}": [1.0] * 100 for k in range(200)})], axis=1)
    msg = _fit_error(tmp_path, df, target="nope")
    assert len(msg) < 600 and "(182 more)" in msg


# -- R11: artifacts accepted too easily --------------------------------------------------------------------
def _edit_json(run: Path, name: str, **changes) -> None:
    data = json.loads((run / name).read_text())
    data.update(changes)
    (run / name).write_text(json.dumps(data))


@pytest.mark.parametrize("name, changes, match", [
    ("scaler.json", {"std": [[1e300]]}, r"scaler.json .*std must be within float32's range .*got 1e\+300"),
    ("scaler.json", {"std": [[1e-300]]}, r"scaler.json .*std must be within float32's range"),
    ("scaler.json", {"mean": [[-1e300]]}, r"scaler.json .*mean must be within float32's range"),
    ("meta.json", {"junk": "x" * 100_000}, r"meta.json .*junk: extra inputs are not permitted, got 'xxx"),
])
def test_r11_rehashed_values_beyond_float32_and_unknown_meta_keys_are_refused(run, name, changes, match):
    _edit_json(run, name, **changes)
    rehash(run)
    with pytest.raises(CheckpointError, match=match) as err:
        lstmcast.load(run)
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["sha256"].update({"../../etc/passwd": "0" * 64}), r"never writes there: '../../etc/passwd'"),
    (lambda m: m["sha256"].update({"notes.txt": "0" * 64}), r"never writes there: 'notes.txt'"),
    (lambda m: m.update({"extra": 1}), r"unknown keys 'extra'"),
    (lambda m: m["sha256"].update({"meta.json": "not-a-hash"}), r"sha256 of 'meta.json' is not 64 hex digits"),
])
def test_r11_manifest_entries_for_unknown_files_or_keys_are_refused(run, edit, match):
    m = json.loads((run / "manifest.json").read_text())
    edit(m)
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"manifest.json is damaged or was edited: .*" + match):
        lstmcast.load(run)


def test_r11_an_edited_rehashed_checkpoint_step_is_refused_and_the_good_one_used(run):
    from lstmcast.run.manifest import sha256_bytes as sha256
    from lstmcast.training.checkpoint import CheckpointStore, read_checkpoint

    newest, older = CheckpointStore(run).names()[:2]
    state = json.loads((newest / "state.json").read_text())
    state["step"] = int(older.name.split("-")[1]) - 1  # older than the good previous checkpoint
    blob = json.dumps(state).encode()
    (newest / "state.json").write_bytes(blob)
    m = json.loads((newest / "manifest.json").read_text())
    m["sha256"]["state.json"] = sha256(blob)
    (newest / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"its step \d+ is not the \d+ its folder is named after"):
        read_checkpoint(newest)
    assert CheckpointStore(run).load_latest().path == older


# -- R12: nothing left behind ------------------------------------------------------------------------------
@pytest.mark.parametrize("failing", ["fsync", "fchmod"])
def test_r12_an_atomic_write_failing_with_enospc_leaves_no_temp_file(tmp_path, monkeypatch, failing):
    import errno
    import os

    from lstmcast import atomic

    (tmp_path / "forecast.csv").write_text("old\n")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, failing, full)
    for name in ("forecast.csv", "forecast.png"):
        with pytest.raises(CheckpointError, match=r"cannot write .*No space left on device; the previous version"):
            atomic.write_bytes(tmp_path / name, b"new" * 1000)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["forecast.csv"]  # no .forecast.*.tmp
    assert (tmp_path / "forecast.csv").read_text() == "old\n"


def test_r12_a_released_run_lock_leaves_no_lock_file_unless_another_worker_shares_it(tmp_path):
    import subprocess
    import sys

    from lstmcast.run.lock import RunLock

    run = tmp_path / "run"
    with RunLock(run):
        (run / "metrics.json").write_text("{}")
        assert (run / ".lock").is_file()
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json"]
    with RunLock(run):  # and it locks again
        assert (run / ".lock").is_file()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lstmcast.run.lock import RunLock; "
         "RunLock(sys.argv[1], shared=True).acquire(); print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with RunLock(run, shared=True):
            pass
        assert (run / ".lock").is_file()  # the other worker still holds it: not removed under it
        with pytest.raises(ConfigError, match="in use by another lstmcast process"):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run):
        pass
    assert not (run / ".lock").exists()


# -- R13: unresumable or misleading states -----------------------------------------------------------------
def test_r13_integer_time_ending_at_2_63_is_refused_before_training(tmp_path, monkeypatch):
    import numpy as np

    from lstmcast.training import fit as fitting

    df = seasonal_frame(200)
    df["step"] = np.arange(2**63 - 200, 2**63, dtype=np.int64)  # ends at 2**63-1: no step after it exists
    csv = tmp_path / "int.csv"
    df[["step", "y"]].to_csv(csv, index=False)

    def trained(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(fitting, "train_first", trained)
    cfg = small_config(data={"path": str(csv), "time_col": "step", "freq": "1"})
    with pytest.raises(DataError, match=r"forecast steps after time 9223372036854775807 .*run past"):
        Forecaster(cfg).fit(str(csv))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run folder `train_run` wrote (monitor.json with probes, monitor.png, report.html)."""
    from lstmcast.config import validate_config
    from lstmcast.workflow import train_run

    d = tmp_path_factory.mktemp("r13")
    csv = d / "series.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    cfg = small_config(data={"path": str(csv)}, train={"precision": "fp32", "max_epochs": 1},
                       monitor={"tensorboard": False})
    train_run(validate_config(cfg), d / "run")
    return d / "run"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_r13_a_report_written_elsewhere_writes_nothing_into_the_run(trained, tmp_path):
    from lstmcast.report.html import write_report

    assert (trained / "monitor.png").is_file() and not list(trained.glob(".*"))  # R12 too: no .lock, no temp
    before = _listing(trained)
    html = write_report(trained, tmp_path / "elsewhere.html").read_text()
    assert _listing(trained) == before  # monitor.png not rewritten: a read-only run can be reported
    monitor = html.split('<section id="monitor">')[1].split("</section>")[0]
    assert 'src="data:image/png;base64,' in monitor


def test_r13_sigterm_between_saving_the_model_and_writing_the_outputs_exits_130_with_the_hint(tmp_path,
                                                                                              monkeypatch):
    import os
    import signal

    from lstmcast.config import validate_config
    from lstmcast.errors import InterruptedRun
    from lstmcast.workflow import outputs_missing, train_run

    class Died(BaseException):
        """What the default SIGTERM action would do: end the process (exit 143, no message)."""

    def default_action(signum, frame):
        raise Died

    original = Forecaster.save

    def save_then_sigterm(self, path, outputs=True):
        out = original(self, path, outputs)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    csv = tmp_path / "series.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    cfg = validate_config(small_config(data={"path": str(csv)}, train={"max_epochs": 1},
                                       monitor={"tensorboard": False}))
    monkeypatch.setattr(Forecaster, "save", save_then_sigterm)
    previous = signal.signal(signal.SIGTERM, default_action)
    try:
        with pytest.raises(InterruptedRun, match=r"SIGTERM: stopped after training.*lstmcast train --resume"):
            train_run(cfg, tmp_path / "run")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert outputs_missing(tmp_path / "run")  # the model is saved: --resume writes the outputs


def test_r13_export_refuses_a_symlinked_export_json_before_writing_the_onnx_file(pristine, tmp_path):
    pytest.importorskip("onnxruntime")
    from lstmcast.export import export_run

    elsewhere = tmp_path / "victim.json"
    elsewhere.write_text("{}")
    (tmp_path / "export.json").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=r"refusing to write .*export.json: it is a symbolic link"):
        export_run(pristine / "run", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists() and elsewhere.read_text() == "{}"


# -- R14: paths of the wrong kind ----------------------------------------------------------------------------
def test_r14_an_out_path_ending_in_a_slash_is_refused_not_written_as_a_file(pristine, tmp_path):
    from typer.testing import CliRunner

    from lstmcast.cli import app
    from lstmcast.report.html import write_report
    from lstmcast.workflow import predict_run

    newdir = tmp_path / "out" / "newdir"
    res = CliRunner().invoke(app, ["predict", str(pristine / "run"), "--out", f"{newdir}/"])
    assert res.exit_code == 2, res.output
    assert "ends in '/', so it names a folder, not a file" in res.output
    with pytest.raises(ConfigError, match=r"ends in '/', so it names a folder"):
        predict_run(pristine / "run", out=f"{newdir}/")
    with pytest.raises(ConfigError, match=r"ends in '/', so it names a folder"):
        write_report(pristine / "run", f"{newdir}/")
    assert not newdir.exists() and not (tmp_path / "out").exists()


def test_r14_a_run_folder_that_is_a_dangling_symlink_is_named_as_such(tmp_path):
    from lstmcast.run.lock import RunLock

    link = tmp_path / "run"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError, match=r"run is a symbolic link to '.*gone', which does not exist: create"):
        RunLock(link).acquire()
    assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_r14_config_files_and_run_folders_that_exist_but_are_the_wrong_kind_say_what_they_are(tmp_path):
    import os

    from lstmcast.config import read_yaml_mapping

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # would block a read forever
    for path, kind in ((tmp_path, "is a folder"), (Path("/dev/zero"), "is not a regular file"),
                       (fifo, "is not a regular file")):
        with pytest.raises(ConfigError, match=rf"config file .* {kind}.*: give -c the path of a YAML file"):
            read_yaml_mapping(path)
    with pytest.raises(ConfigError, match=r"does not exist"):
        read_yaml_mapping(tmp_path / "absent.yaml")
    csv = tmp_path / "x.csv"
    seasonal_frame(50).to_csv(csv, index=False)
    with pytest.raises(CheckpointError, match=r"run folder '.*x.csv' is not a folder: pass the run folder"):
        lstmcast.load(csv)
    with pytest.raises(CheckpointError, match=r"does not exist"):
        lstmcast.load(tmp_path / "absent")


def test_r12_a_finished_run_keeps_no_temp_file_a_killed_write_left(trained, tmp_path):
    from lstmcast.workflow import COMPLETE, resume_outputs

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / COMPLETE).unlink()  # killed while writing the outputs: one write's temp file stayed
    (run / ".config.yaml.k2j4h1.tmp").write_text("half")
    (run / ".forecast.png.x8d9.tmp").write_bytes(b"half")
    resume_outputs(run)
    assert (run / COMPLETE).is_file() and not list(run.glob(".*"))


def test_r9_a_relative_data_path_as_the_cli_passes_it_is_recorded(tmp_path, monkeypatch):
    """The README quick start: `train --data examples/...csv` then `evaluate RUN` without --data. The CLI fits
    on the path as typed (relative) while config.yaml stores it absolute: the record must still be written."""
    monkeypatch.chdir(tmp_path)
    seasonal_frame(300).to_csv("series.csv", index=False)
    cfg = small_config(data={"path": "series.csv"}, train={"max_epochs": 1})
    Forecaster(cfg).fit("series.csv").save("run")
    record = json.loads((tmp_path / "run" / "manifest.json").read_text())["data"]
    assert record["path"] == str(tmp_path / "series.csv") and len(record["sha256"]) == 64
    assert len(lstmcast.load("run").predict()) == 6  # read without --data, as `predict RUN` does
