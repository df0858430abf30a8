"""FAULTS T12: a run folder or checkpoint edited and then re-hashed (so the sha256 manifest agrees) is
refused with a CheckpointError (exit 4) that names the file and what is wrong; never an empty or NaN
forecast with exit 0, a ShapeError blaming the input, or a crash (exit 1) in the middle of training."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import lstmcast
from lstmcast.errors import CheckpointError
from lstmcast.run.manifest import sha256_bytes
from lstmcast.training import checkpoint as ck
from lstmcast.training.checkpoint import CheckpointStore, read_checkpoint
from tests.conftest import run_cli
from tests.faults.run_fixtures import rehash, save_trained_run


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A saved run folder (with its checkpoints) and its data file."""
    return save_trained_run(tmp_path_factory.mktemp("t12"))


@pytest.fixture
def run(pristine, tmp_path) -> Path:
    shutil.copytree(pristine / "run", tmp_path / "run")
    return tmp_path / "run"


def edit_json(name: str, key: str, value) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        data = json.loads((run / name).read_text())
        data[key] = value
        (run / name).write_text(json.dumps(data))
    return edit


def edit_weights(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        state = st_load((run / "model.safetensors").read_bytes())
        (run / "model.safetensors").write_bytes(st_save({k: change(v) for k, v in state.items()}))
    return edit


def _nan_first(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


TAMPERED = {
    "nan_weights": (edit_weights(_nan_first), r"model.safetensors .*tensors hold NaN or infinite values"),
    "float64_weights": (edit_weights(lambda t: t.double()), r"model.safetensors .*is torch.float64"),
    "float16_weights": (edit_weights(lambda t: t.half()), r"model.safetensors .*is torch.float16"),
    "std_zero": (edit_json("scaler.json", "std", [[0.0]]), r"scaler.json .*std must be > 0 .*got 0.0"),
    "std_nan": (edit_json("scaler.json", "std", [[float("nan")]]), r"scaler.json .*std.0.0: input should be a finite"),
    "mean_inf": (edit_json("scaler.json", "mean", [[float("inf")]]), r"scaler.json .*mean.0.0: .*finite"),
    "scaler_ids": (edit_json("scaler.json", "ids", ["other"]), r"scaler.json .*ids \['other'\] differ from meta"),
    "scaler_shape": (edit_json("scaler.json", "std", [[1.0, 2.0]]), r"scaler.json .*std must be 1 rows of 1"),
    "format_version": (edit_json("meta.json", "format_version", 99), r"meta.json .*format_version: .*got 99"),
    "layout": (edit_json("meta.json", "layout", "diagonal"), r"meta.json .*layout: input should be 'single'"),
    "layout_long": (edit_json("meta.json", "layout", "long"), r"meta.json .*layout 'long' needs an id_col"),
    "time_col": (edit_json("meta.json", "time_col", 5), r"meta.json .*time_col: input should be a valid string"),
    "anchor": (edit_json("meta.json", "anchor", "yesterday"), r"meta.json .*anchor: not a timestamp"),
    "freq": (edit_json("meta.json", "freq", "fortnightly"), r"meta.json .*freq: not a pandas frequency"),
    "tz": (edit_json("meta.json", "tz", "Mars/Olympus"), r"meta.json .*tz: not a time zone"),
    "window_bool": (edit_json("meta.json", "window", True), r"meta.json .*window: input should be a valid integer"),
    "channels": (edit_json("meta.json", "channels", ["z"]), r"meta.json .*channels \['z'\] are not the targets"),
    "horizon": (edit_json("meta.json", "horizon", 7), r"data.horizon is 6 in config.yaml but 7 in meta.json"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_rehashed_edit_of_a_run_folder_is_a_checkpoint_error_naming_the_file(run, case):
    edit, match = TAMPERED[case]
    edit(run)
    rehash(run)
    with pytest.raises(CheckpointError, match=match):
        lstmcast.load(run)


def test_untouched_run_folder_still_loads_and_forecasts(pristine):
    out = lstmcast.load(pristine / "run").predict(str(pristine / "series.csv"))
    assert len(out) == 6 and out["y"].notna().all()


def test_cli_predict_on_nan_weights_exits_4_not_an_empty_forecast(run, pristine):
    TAMPERED["nan_weights"][0](run)
    rehash(run)
    res = run_cli("predict", str(run), "--data", str(pristine / "series.csv"), timeout=120)
    assert res.returncode == 4, res.stderr
    assert "model.safetensors is damaged or was edited" in res.stderr and "this is a bug" not in res.stderr


# -- checkpoints ---------------------------------------------------------------------------------------
def _edit_state(folder: Path, change: Callable[[dict], None]) -> None:
    state = json.loads((folder / ck.STATE).read_text())
    change(state)
    (folder / ck.STATE).write_text(json.dumps(state))
    m = json.loads((folder / ck.MANIFEST).read_text())
    m["sha256"][ck.STATE] = sha256_bytes((folder / ck.STATE).read_bytes())
    (folder / ck.MANIFEST).write_text(json.dumps(m))


def _set(path: tuple, value) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        node = state
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return change


@pytest.mark.parametrize(("path", "value", "match"), [
    (("optimizer", "param_groups", 0, "lr"), "x", r"optimizer.param_groups.0.lr: input should be a valid number"),
    (("optimizer", "param_groups", 0, "betas"), "x", r"optimizer.param_groups.0.betas: input should be a valid list"),
    (("optimizer", "param_groups", 0, "eps"), float("nan"), r"optimizer.param_groups.0.eps: .*finite"),
    (("scheduler", "_last_lr"), ["x"], r"scheduler._last_lr.0: input should be a valid number"),
    (("early_stopping", "bad_epochs"), True, r"early_stopping.bad_epochs: input should be a valid integer"),
    (("history", 0, "lr"), "0.001", r"history.0.lr: input should be a valid number"),
])
def test_rehashed_checkpoint_with_wrong_types_is_a_checkpoint_error(run, path, value, match):
    folder = CheckpointStore(run).names()[0]
    _edit_state(folder, _set(path, value))
    with pytest.raises(CheckpointError, match=rf"{ck.STATE} is damaged or was edited: {match}"):
        read_checkpoint(folder)


def test_cli_resume_of_a_checkpoint_with_a_string_lr_exits_4_not_1(run, pristine, tmp_path):
    crashed = tmp_path / "crashed"
    shutil.copytree(run / "checkpoints", crashed / "checkpoints")  # checkpoints only, as after a crash
    for folder in CheckpointStore(crashed).names():
        _edit_state(folder, _set(("optimizer", "param_groups", 0, "lr"), "x"))
    res = run_cli("train", "--resume", str(crashed), "--data", str(pristine / "series.csv"), timeout=120)
    assert res.returncode == 4, res.stderr
    assert "lr: input should be a valid number, got 'x'" in res.stderr
