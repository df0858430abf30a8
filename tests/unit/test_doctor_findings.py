"""Every doctor finding, triggered by a config built for it; train refuses the same errors with the same text."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch

import lstmcast.doctor
from lstmcast.config import validate_config
from lstmcast.doctor import checks as doctor_checks
from lstmcast.doctor import report as doctor_report
from lstmcast.doctor.report import doctor, preflight
from lstmcast.errors import ConfigError, DataError
from lstmcast.findings import Finding
from lstmcast.forecaster import Forecaster
from tests.conftest import seasonal_frame, small_config


def codes(report, severity=None):
    return [f.code for f in report.findings if severity is None or f.severity == severity]


def only(report, code) -> Finding:
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, report.findings
    return found[0]


def cfg_only(**sections) -> dict:
    """A clean config-only base: F = 10 (1 target + 9 features), hidden 32, batch 32, window 20."""
    cfg = {"data": {"target": "y", "features": [f"x{i}" for i in range(9)], "window": 20, "horizon": 4},
           "model": {"hidden_size": 32, "num_layers": 2, "dropout": 0.1}, "train": {"batch_size": 32, "device": "cpu",
                                                                                 "precision": "fp32"}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


@pytest.fixture(autouse=True)
def _no_bf16_cpu(monkeypatch):
    """The CPU precision advice depends on this machine's flags; tests choose them."""
    monkeypatch.setattr(doctor_checks, "cpu_has_bf16", lambda: False)


def test_clean_config_has_no_findings_and_is_ok():
    rep = doctor(cfg_only())
    assert rep.findings == [] and rep.ok and rep.error_text() == ""


def test_the_package_entry_point_is_the_doctor_function():
    assert lstmcast.doctor.doctor is doctor and lstmcast.doctor.doctor(cfg_only()).ok


# -- errors: the same text train stops with ----------------------------------------------------------
def test_dropout_with_one_layer_is_an_error_with_trains_text():
    raw = cfg_only(model={"num_layers": 1, "dropout": 0.2})
    rep = doctor(raw)
    f = only(rep, "dropout-one-layer")
    assert f.severity == "error" and not rep.ok
    assert f.message == ("model.dropout=0.2 has no effect with model.num_layers=1 (LSTM dropout acts between "
                         "layers)")
    assert f.fix == "set model.num_layers>=2 or model.dropout=0"
    with pytest.raises(ConfigError) as exc:
        Forecaster(raw).fit(seasonal_frame(100))
    assert str(exc.value) == rep.error_text()


def test_other_semantic_config_problems_are_errors():
    rep = doctor(cfg_only(data={"val_fraction": 0.4, "test_fraction": 0.45}))
    f = only(rep, "config")
    assert f.severity == "error" and "leaves under 20% of the series to train on" in f.message
    assert f.fix == "lower one of them"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_an_error_with_trains_text():
    rep = doctor(cfg_only(train={"device": "cuda"}))
    f = only(rep, "device")
    assert f.message == "train.device is 'cuda' but no CUDA GPU is visible to PyTorch"
    with pytest.raises(ConfigError) as exc:
        Forecaster(small_config(train={"device": "cuda"})).fit(seasonal_frame(100))
    assert str(exc.value) == rep.error_text()


def test_fp16_on_cpu_is_an_error():
    f = only(doctor(cfg_only(train={"precision": "fp16"})), "device")
    assert "fp16 is not supported on CPU" in f.message and "bf16 or fp32" in f.fix


def test_series_too_short_after_the_split_gives_required_and_actual():
    cfg = small_config(data={"window": 48, "horizon": 6})
    df = seasonal_frame(70)  # validation and test take 12 (two horizons) + 14, leaving 44 training points
    rep = doctor(cfg, df)
    f = only(rep, "series-too-short")
    assert f.severity == "error"
    assert "48 + 6 = 54" in f.message and "44 training points" in f.message
    assert "reduce data.window or data.horizon" in f.fix
    with pytest.raises(DataError) as exc:
        Forecaster(cfg).fit(df)
    assert str(exc.value) == rep.error_text()


def test_no_complete_window_is_a_data_error():
    df = seasonal_frame(300)
    df.loc[::10, "y"] = np.nan  # a gap every 10 rows: no 30-point window is complete
    rep = doctor(small_config(data={"missing": "drop-windows"}), df)
    f = only(rep, "data-windows")
    assert f.severity == "error" and "no complete training window" in f.message


def test_train_runs_the_doctors_checks_and_refuses_its_errors(monkeypatch):
    """An error only the doctor knows still stops fit, before training, with the doctor's text."""
    extra = Finding("error", "made-up", "a problem only the doctor sees", "change something")
    monkeypatch.setattr(doctor_report, "model_findings", lambda *a: [extra])  # where the doctor calls it
    fc = Forecaster(small_config())
    with pytest.raises(ConfigError, match="^a problem only the doctor sees: change something$"):
        fc.fit(seasonal_frame(200))
    assert fc.training_ is None


def test_preflight_logs_advice_and_warnings(caplog):
    from lstmcast.data.load import load_series
    from lstmcast.data.prepare import prepare
    from lstmcast.training.accel import resolve

    cfg = validate_config(small_config(model={"hidden_size": 256, "num_layers": 2}))
    series = load_series(seasonal_frame(200), cfg)
    with caplog.at_level(logging.INFO, logger="lstmcast.doctor.report"):
        rep = preflight(cfg, series, prepare(series, cfg.data), resolve("cpu", "fp32", 1))
    assert rep.ok
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("overfitting risk" in r.getMessage() for r in warned)


# -- advice, warnings and info ---------------------------------------------------------------------------
def test_hidden_size_outside_2_to_4x_features():
    f = only(doctor(cfg_only(model={"hidden_size": 64})), "hidden-size-range")
    assert f.severity == "advice"
    assert f.message == "model.hidden_size=64 is 6.4x the 10 input feature(s); the guide starts at 2-4x, 20-40 here"
    assert f.fix == "try model.hidden_size=32 first and tune from there"
    low = only(doctor(cfg_only(model={"hidden_size": 8})), "hidden-size-range")
    assert "0.8x" in low.message
    uni = only(doctor({"data": {"target": "y", "window": 20}, "train": {"device": "cpu"}}), "hidden-size-range")
    assert uni.severity == "info" and "2-4 here" in uni.message


def test_bidirectional_doubles_the_head_width():
    rep = doctor(cfg_only(model={"bidirectional": True}))
    f = only(rep, "bidirectional-head")
    assert f.severity == "info"
    assert "the head takes D * hidden = 2 * 32 = 64 inputs" in f.message
    assert f"{rep.n_parameters:,} parameters" in f.message


def test_few_windows_per_parameter_suggests_a_width_with_numbers():
    rep = doctor(small_config(model={"hidden_size": 128, "num_layers": 2, "dropout": 0.1}), seasonal_frame(200))
    f = only(rep, "few-windows-per-parameter")
    assert f.severity == "warning"
    assert f"{rep.train_windows:,} training windows for {rep.n_parameters:,} parameters" in f.message
    m = re.search(r"use model.hidden_size=(\d+) \(([\d,]+) parameters", f.fix)
    assert m and int(m.group(1)) < 128
    assert "raise model.dropout towards 0.3 (now 0.1)" in f.fix
    assert "few-windows-per-parameter" not in codes(doctor(small_config(), seasonal_frame(200)))


def test_data_findings_are_skipped_without_data():
    rep = doctor(cfg_only(model={"hidden_size": 1024}))
    assert rep.train_windows is None and "few-windows-per-parameter" not in codes(rep)


def test_batch_not_multiple_of_8_on_cuda():
    f = only(doctor(cfg_only(train={"device": "cuda", "batch_size": 30})), "batch-multiple-of-8")
    assert f.message.startswith("train.batch_size=30 is not a multiple of 8") and f.fix == "use train.batch_size=32"
    assert "batch-multiple-of-8" not in codes(doctor(cfg_only(train={"device": "cuda"})))
    assert "batch-multiple-of-8" not in codes(doctor(cfg_only(train={"batch_size": 30})))  # cpu


def test_pin_memory_explained_on_cuda():
    f = only(doctor(cfg_only(train={"device": "cuda"})), "pin-memory")
    assert "copied to the GPU once" in f.message and "pin_memory=True) has nothing to speed up" in f.message


def test_precision_advice_on_cuda():
    small = only(doctor(cfg_only(train={"device": "cuda", "precision": "bf16"})), "precision")
    assert "0.6-0.7x the fp32 speed" in small.message and small.fix == "use train.precision=fp32 (or tf32)"
    wide = only(doctor(cfg_only(model={"hidden_size": 256}, train={"device": "cuda", "batch_size": 2048})),
                "precision")
    assert "1.6x faster at hidden 256x2, batch 1024" in wide.message


def test_precision_advice_on_cpu(monkeypatch):
    monkeypatch.setattr(doctor_checks, "cpu_has_bf16", lambda: True)
    f = only(doctor(cfg_only()), "precision")
    assert "bf16 autocast measured 1.4x faster" in f.message and f.fix.startswith("try train.precision=bf16")
    assert "precision" not in codes(doctor(cfg_only(train={"precision": "auto"})))  # auto measures it itself
    monkeypatch.setattr(doctor_checks, "cpu_has_bf16", lambda: False)
    f = only(doctor(cfg_only(train={"precision": "bf16"})), "precision")
    assert "without bf16 instructions" in f.message and f.fix == "use train.precision=fp32"


def test_residual_projection_where_widths_differ():
    rep = doctor(cfg_only(model={"residual": True}))
    f = only(rep, "residual-projection")
    assert "Linear(10, 32, bias=False) projection on the skip (320 parameters)" in f.message
    assert "residual-projection" not in codes(doctor(cfg_only(model={"residual": True, "hidden_size": 10})))


def test_residual_with_one_layer_and_deep_stack_without_residual():
    one = only(doctor(cfg_only(model={"residual": True, "num_layers": 1, "dropout": 0})), "residual-one-layer")
    assert one.severity == "advice" and "model.num_layers>=3" in one.fix
    deep = only(doctor(cfg_only(model={"num_layers": 4})), "deep-stack")
    assert deep.fix.startswith("set model.residual=true")
    assert "deep-stack" not in codes(doctor(cfg_only(model={"num_layers": 4, "residual": True})))


def test_long_window_suggests_two_seasons_or_a_stride():
    rep = doctor(small_config(data={"window": 240, "horizon": 6, "season": 24}), seasonal_frame(800))
    f = only(rep, "long-window")
    assert f.message.startswith("data.window=240 steps is long for an LSTM")
    assert f.fix.startswith("try data.window=48 (two seasons of 24), or a stride")
    assert "long-window" not in codes(doctor(cfg_only(data={"window": 200})))


def test_clipping_off_high_dropout_and_no_bias():
    rep = doctor(cfg_only(train={"clip_norm": None}, model={"dropout": 0.6, "bias": False}))
    assert only(rep, "clipping-off").fix == "set train.clip_norm between 1.0 and 5.0 (1.0 is the default)"
    assert only(rep, "dropout-high").fix == "the guide's range against overfitting is 0.1-0.3"
    assert only(rep, "bias-off").severity == "advice"
    assert not rep.errors


def test_constant_column_and_data_notes():
    df = seasonal_frame(200)
    df["z"] = 1.0
    df = df.iloc[::-1]  # unsorted rows are sorted, with a note
    rep = doctor(small_config(data={"features": "z"}), df)
    assert "z" in only(rep, "constant-columns").message
    assert only(rep, "data-note").severity == "info"


def test_invalid_data_raises_like_train():
    with pytest.raises(DataError, match="data.target 'nope' is not a column"):
        doctor(small_config(data={"target": "nope"}), seasonal_frame(100))
