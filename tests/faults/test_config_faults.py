"""FAULTS.md C1 (dropout with one layer), C2 (keys, types, ranges: all at once), C3 (device/precision),
C4 (resume with a changed architecture, columns or frequency)."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
import yaml

from lstmcast import Forecaster
from lstmcast.config import apply_overrides, load_config, validate_config
from lstmcast.errors import ConfigError
from lstmcast.training import accel
from lstmcast.training.checkpoint import CheckpointStore
from lstmcast.training.resume import config_diff, resume_config
from tests.conftest import run_cli, seasonal_frame, small_config


# -- C1 -----------------------------------------------------------------------------------------
def test_dropout_with_one_layer_is_an_error_not_a_warning():
    with pytest.raises(ConfigError, match=r"model.dropout=0.2 has no effect with model.num_layers=1 .*set "
                                          r"model.num_layers>=2 or model.dropout=0"):
        validate_config({"model": {"num_layers": 1, "dropout": 0.2}})
    assert validate_config({"model": {"num_layers": 2, "dropout": 0.2}}).model.dropout == 0.2


def test_cli_dropout_with_one_layer_exits_2_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    res = run_cli("train", "--run", str(run), "--set", "model.num_layers=1", "--set", "model.dropout=0.3")
    assert res.returncode == 2, res.stderr
    assert "model.dropout=0.3 has no effect with model.num_layers=1" in res.stderr
    assert "Traceback" not in res.stderr and not run.exists()


# -- C2 -----------------------------------------------------------------------------------------
def test_unknown_keys_wrong_types_and_ranges_are_reported_together_with_did_you_mean():
    raw = {"modle": {}, "model": {"hiden_size": 8, "num_layers": "two", "dropout": 0.2},
           "train": {"lr": -1, "device": "cuda0"}}
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    problems = info.value.problems
    assert "unknown key 'modle' (did you mean 'model'?)" in problems
    assert "unknown key 'model.hiden_size' (did you mean 'model.hidden_size'?)" in problems
    assert any(p.startswith("model.num_layers: input should be a valid integer") and "'two'" in p for p in problems)
    assert any(p.startswith("train.lr: input should be greater than 0") for p in problems)
    assert any(p.startswith("train.device:") and "(did you mean 'cuda'?)" in p for p in problems)
    assert str(info.value).startswith(f"{len(problems)} problems:")


def test_semantic_problems_are_reported_alongside_type_errors():
    with pytest.raises(ConfigError) as info:
        validate_config({"model": {"num_layers": 1, "dropout": 0.2}, "train": {"batch_size": 0}})
    text = str(info.value)
    assert "train.batch_size: input should be greater than or equal to 1" in text
    assert "model.dropout=0.2 has no effect with model.num_layers=1" in text


def test_unknown_set_override_does_not_hide_the_other_problems():
    with pytest.raises(ConfigError) as info:
        apply_overrides({}, ["model.hiden_size=3", "train.lr=-1"])
    assert info.value.problems[0] == "unknown key 'model.hiden_size' in --set (did you mean 'model.hidden_size'?)"
    assert any(p.startswith("train.lr: input should be greater than 0") for p in info.value.problems[1:])


def test_yaml_config_file_problems_name_the_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"horizon": 0}, "train": {"batch_sise": 32}}))
    with pytest.raises(ConfigError, match=r"2 problems:\n  - data.horizon: input should be greater than or equal "
                                          r"to 1, got 0\n  - unknown key 'train.batch_sise' \(did you mean "
                                          r"'train.batch_size'\?\)"):
        load_config(path)


# -- C3 -----------------------------------------------------------------------------------------
def test_cuda_without_gpu_is_refused_before_any_data_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = tmp_path / "does_not_exist.csv"  # reading it would be a DataError
    with pytest.raises(ConfigError, match=r"train.device is 'cuda' but no CUDA GPU is visible .*set train.device "
                                          r"to 'cpu' or 'auto'"):
        Forecaster(small_config(train={"device": "cuda"})).fit(str(missing))


def test_fp16_and_tf32_on_cpu_are_refused_before_any_data_is_read(tmp_path):
    missing = str(tmp_path / "does_not_exist.csv")
    with pytest.raises(ConfigError, match=r"fp16 is not supported on CPU: use bf16 or fp32"):
        Forecaster(small_config(train={"device": "cpu", "precision": "fp16"})).fit(missing)
    with pytest.raises(ConfigError, match=r"tf32 exists on NVIDIA GPUs only"):
        Forecaster(small_config(train={"device": "cpu", "precision": "tf32"})).fit(missing)


def test_bf16_on_a_gpu_without_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ConfigError, match=r"bf16 is not supported by this GPU: use fp16 or fp32"):
        accel.resolve("cuda", "bf16", None)


def test_device_auto_falls_back_to_cpu_with_a_logged_reason(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="lstmcast.training.accel"):
        got = accel.resolve("auto", "fp32", 1)
    assert got.device.type == "cpu"
    assert "device cpu, precision fp32" in caplog.text


# -- C4 -----------------------------------------------------------------------------------------
C4_CFG = small_config(train={"precision": "fp32", "checkpoint_every": 4, "max_epochs": 2})


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run folder with checkpoints (no final run files, as after a crash) and its data file."""
    d = tmp_path_factory.mktemp("c4")
    csv = d / "series.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    cfg = {**C4_CFG, "data": {**C4_CFG["data"], "path": str(csv)}}
    Forecaster(cfg).fit(str(csv), run_dir=d / "run")
    return d


@pytest.fixture
def run(interrupted, tmp_path):
    shutil.copytree(interrupted / "run", tmp_path / "run")
    return tmp_path / "run"


def test_resume_with_a_changed_architecture_names_every_differing_key(run):
    with pytest.raises(ConfigError) as info:
        resume_config(run, overrides=["model.hidden_size=32", "model.bidirectional=true", "data.horizon=3"])
    text = str(info.value)
    assert "with a changed architecture or data settings" in text
    assert "model.hidden_size: the checkpoint has 16, now 32" in text
    assert "model.bidirectional: the checkpoint has False, now True" in text
    assert "data.horizon: the checkpoint has 6, now 3" in text


def test_resume_may_change_what_does_not_change_the_saved_state(run):
    cfg, ckpt = resume_config(run, overrides=["train.max_epochs=5", "train.lr=0.0005", "monitor.tensorboard=false"])
    assert cfg.train.max_epochs == 5 and ckpt.step == 10
    assert config_diff({"data": {"window": 24}}, {"data": {"window": None}}) == []  # auto resolves from the data


def test_resume_on_data_with_other_columns_or_frequency_names_what_differs(run, interrupted):
    ckpt = CheckpointStore(run).load_latest()
    cfg = validate_config(ckpt.meta["config"])
    df = seasonal_frame(300)
    df["temp"] = np.arange(300.0)
    with pytest.raises(ConfigError, match=r"cannot resume .* on different data.*\n  - data features: the checkpoint "
                                          r"has \[\], now \['temp'\]"):
        Forecaster(cfg.model_copy(update={"data": cfg.data.model_copy(update={"features": ["temp"]})})).fit(
            df, run_dir=run, resume_from=ckpt)
    with pytest.raises(ConfigError, match=r"data freq: the checkpoint has 'h', now '30min'"):
        Forecaster(cfg).fit(seasonal_frame(300, freq="30min"), run_dir=run, resume_from=ckpt)
    shifted = seasonal_frame(300, seed=5)
    with pytest.raises(ConfigError, match=r"data values: same columns and length but different values"):
        Forecaster(cfg).fit(shifted, run_dir=run, resume_from=ckpt)


def test_cli_resume_with_changed_architecture_exits_2(run):
    res = run_cli("train", "--resume", str(run), "--set", "model.num_layers=2", "--set", "model.hidden_size=8")
    assert res.returncode == 2, res.stderr
    assert "model.num_layers: the checkpoint has 1, now 2" in res.stderr
    assert "model.hidden_size: the checkpoint has 16, now 8" in res.stderr


def test_new_run_in_a_folder_with_unfinished_checkpoints_is_refused(run):
    res = run_cli("train", "--run", str(run))
    assert res.returncode == 2, res.stderr
    assert f"holds checkpoints of an unfinished run: continue it with `lstmcast train --resume {run}`" in res.stderr
