"""The learning-curve diagnosis: each verdict on curves built to show it, and one real run that overfits."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lstmcast.config import validate_config
from lstmcast.doctor.diagnosis import DataInfo, Diagnosis, data_info_of, diagnose
from lstmcast.findings import Finding
from tests.conftest import small_config


def _history(train, val, skipped=None, clipped=0.0, lr=1e-3, steps=10):
    skipped = skipped or [0] * len(train)
    return [{"epoch": i + 1, "train_loss": t, "val_loss": v, "lr": lr, "grad_norm": 0.5, "clipped_fraction": clipped,
             "skipped_steps": s, "steps": steps, "seconds": 0.1, "samples_per_s": 100.0}
            for i, (t, v, s) in enumerate(zip(train, val, skipped))]


CFG = validate_config({"data": {"window": 24}, "model": {"hidden_size": 64, "num_layers": 2, "dropout": 0.1},
                       "train": {"max_epochs": 20, "lr": 3e-3}})


def test_converged_curve():
    train = [1.0, 0.5, 0.3, 0.25, 0.24, 0.24, 0.239, 0.239]
    val = [1.0, 0.55, 0.35, 0.3, 0.29, 0.291, 0.29, 0.2905]
    d = diagnose(_history(train, val))
    assert d.verdict == "converged" and d.summary == "converged"
    assert d.best_epoch == 5
    assert [f.code for f in d.findings] == ["diagnosis-converged"]
    assert "best 0.29 in epoch 5 of 8" in d.findings[0].message
    assert d.findings[0].severity == "info"


def test_still_improving_suggests_more_epochs_with_numbers():
    train = [1.0, 0.8, 0.6, 0.45, 0.35, 0.3]
    val = [1.0, 0.85, 0.7, 0.55, 0.45, 0.4]
    d = diagnose(_history(train, val), config=CFG)
    assert d.verdict == "still-improving" and d.summary == "still improving"
    f = d.findings[0]
    assert f.code == "diagnosis-still-improving"
    assert "fell 42.9% over the last 3 epochs, to its best 0.4 in the last epoch (6)" in f.message
    assert f.fix == "train longer: train.max_epochs 20 -> 40"
    assert diagnose(_history(train, val)).findings[0].fix == "train longer: raise train.max_epochs"


def test_overfitting_from_epoch_k_with_numbers():
    train = [1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07]
    val = [1.0, 0.7, 0.5, 0.45, 0.5, 0.56, 0.62, 0.7]
    d = diagnose(_history(train, val), config=CFG)
    assert d.verdict == "overfitting"
    assert d.summary == "overfitting from epoch 4"
    f = d.findings[0]
    assert f.code == "diagnosis-overfitting" and f.severity == "warning"
    assert ("validation loss bottomed at 0.45 in epoch 4 and rose to 0.7 by epoch 8 (+56%) while training loss fell "
            "from 0.3 to 0.07") == f.message
    assert f.fix.startswith("halve model.hidden_size (64 -> 32) or raise model.dropout from 0.1 towards 0.3")
    assert f.fix.endswith("the saved model holds the weights of epoch 4")


def test_overfitting_with_one_layer_says_dropout_needs_two_layers():
    cfg = validate_config({"model": {"hidden_size": 32, "num_layers": 1, "dropout": 0.0}})
    d = diagnose(_history([1, .5, .3, .2, .1], [1, .5, .6, .7, .8]), config=cfg)
    assert d.verdict == "overfitting"
    assert "(32 -> 16)" in d.findings[0].fix
    assert "with model.num_layers=2: dropout acts between layers" in d.findings[0].fix


def test_validation_noise_after_the_best_is_not_overfitting_nor_converged():
    # val ends within 10% of its best: the plateau is noisy, not rising; but moving 7% is not "converged" either
    d = diagnose(_history([1, .5, .3, .28, .27, .26], [1, .5, .4, .43, .41, .42]))
    assert d.verdict == "inconclusive" and d.summary == "inconclusive: the loss has not settled"
    f = d.findings[0]
    assert f.code == "diagnosis-not-settled"
    assert "the loss still moves 4.9% over the last 3 epochs without a clear trend" in f.message
    assert f.fix.startswith("train longer")


def test_underfitting_flat_and_high():
    train = [0.95, 0.93, 0.92, 0.92, 0.919, 0.919, 0.918, 0.918, 0.918]
    val = [0.97, 0.95, 0.94, 0.94, 0.94, 0.941, 0.94, 0.94, 0.94]
    d = diagnose(_history(train, val), config=CFG)
    assert d.verdict == "underfitting"
    f = d.findings[0]
    assert f.code == "diagnosis-underfitting"
    assert "flat and high: training 0.918 moved 0.1% over the last 3 epochs, best validation 0.94" in f.message
    assert ("more capacity: model.hidden_size 64 -> 128 or model.num_layers 2 -> 3, or a longer window: "
            "data.window 24 -> 48") in f.fix


def test_flat_and_high_in_units_of_the_seasonal_change_is_not_underfitting():
    """data.scaling diff (a table of seasonal series): a loss of 0.9 is 0.9 squared mean seasonal changes, about
    seasonal naive's error, not "predicting the mean": the underfitting check does not apply."""
    train = [0.95, 0.93, 0.92, 0.92, 0.919, 0.919, 0.918, 0.918, 0.918]
    val = [0.97, 0.95, 0.94, 0.94, 0.94, 0.941, 0.94, 0.94, 0.94]
    cfg = CFG.model_copy(deep=True)
    cfg.data.scaling = "diff"
    d = diagnose(_history(train, val), config=cfg)
    assert d.verdict != "underfitting"
    assert all(f.code != "diagnosis-underfitting" for f in d.findings)


def test_flat_but_low_is_converged_not_underfitting():
    d = diagnose(_history([0.2, 0.1, 0.1, 0.1, 0.1, 0.1], [0.2, 0.12, 0.12, 0.12, 0.12, 0.12]))
    assert d.verdict == "converged"


def test_unstable_from_skipped_steps():
    train = [1.0, 0.6, 0.4, 0.35, 0.3]
    d = diagnose(_history(train, train, skipped=[0, 0, 3, 0, 1]), config=CFG)
    assert d.verdict == "unstable"
    f = d.findings[0]
    assert f.code == "diagnosis-unstable"
    assert "4 training steps were skipped for a non-finite loss or gradient (epochs [3, 5])" in f.message
    assert f.fix.startswith("lower train.lr from 0.003 to 0.001 and keep train.clip_norm at 1.0")


def test_unstable_from_a_loss_spike_and_clipping_off():
    cfg = validate_config({"train": {"clip_norm": None, "lr": 0.01}})
    train = [1.0, 0.5, 0.3, 2.0, 0.4, 0.3]
    d = diagnose(_history(train, train), config=cfg)
    assert d.verdict == "unstable"
    assert "spiked above 1.5x its best so far in epoch(s) [4]" in d.findings[0].message
    assert "lower train.lr from 0.01 to 0.0033 and set train.clip_norm=1.0" in d.findings[0].fix


def test_small_wiggles_of_a_tiny_loss_are_not_spikes():
    train = [1.0, 0.5, 0.2, 0.05, 0.03, 0.05, 0.04]
    assert diagnose(_history(train, train)).verdict != "unstable"


def test_non_finite_training_loss_is_unstable():
    d = diagnose(_history([1.0, 0.5, math.nan, 0.4], [1.0, 0.5, 0.5, 0.45]))
    assert d.verdict == "unstable"


def test_every_condition_is_listed_and_verdict_is_the_most_pressing():
    train = [1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07]
    val = [1.0, 0.7, 0.5, 0.45, 0.5, 0.56, 0.62, 0.7]
    d = diagnose(_history(train, val, skipped=[0, 0, 0, 0, 0, 2, 0, 0]))
    assert d.verdict == "unstable"
    assert [f.code for f in d.findings] == ["diagnosis-unstable", "diagnosis-overfitting"]


def test_frequent_clipping_is_advice():
    d = diagnose(_history([1.0, 0.5, 0.3, 0.29, 0.29], [1.0, 0.5, 0.3, 0.29, 0.29], clipped=0.8))
    assert "clipping-frequent" in [f.code for f in d.findings]
    assert "gradient clipping acted on 80% of the steps of the last epoch" in str(d)


def test_without_validation_the_training_curve_is_read():
    d = diagnose(_history([1.0, 0.8, 0.6, 0.45, 0.35], [math.nan] * 5))
    assert d.verdict == "still-improving"


def test_too_few_epochs_is_inconclusive():
    d = diagnose(_history([1.0], [1.0]))
    assert d.verdict == "inconclusive" and d.summary == "inconclusive: insufficient evidence"
    assert d.findings[0].fix.startswith("insufficient evidence: train longer (train.max_epochs, train.patience)")
    assert diagnose([]).epochs == 0


def test_two_epochs_of_one_step_are_not_converged():
    """H15: a flat 2-epoch curve of 1 optimizer step each used to read as "converged"."""
    d = diagnose(_history([0.5, 0.5], [0.6, 0.6], steps=1))
    assert d.verdict == "inconclusive"
    f = d.findings[0]
    assert f.code == "diagnosis-inconclusive"
    assert f.message == ("2 epoch(s) of 2 optimizer step(s) in all are too few to read a learning curve (the "
                         "diagnosis needs >= 3 epochs and >= 30 optimizer steps)")
    assert "each epoch is only 1 step(s)" in f.fix and "more data" in f.fix


def test_many_epochs_of_few_steps_are_inconclusive_with_the_window_count():
    info = DataInfo(train_points=(40,), window=24, horizon=6)
    flat = [0.3] * 10
    d = diagnose(_history(flat, flat, steps=1), config=CFG, data_info=info)
    assert d.verdict == "inconclusive"
    assert "10 epoch(s) of 10 optimizer step(s)" in d.findings[0].message
    assert "(11 training windows)" in d.findings[0].fix


def test_enough_steps_but_too_few_epochs_is_inconclusive():
    d = diagnose(_history([1.0, 0.3], [1.0, 0.3], steps=500))
    assert d.verdict == "inconclusive"


def test_skipped_steps_are_reported_even_in_a_short_run():
    d = diagnose(_history([1.0, 0.6], [1.0, 0.6], skipped=[0, 2], steps=1))
    assert d.verdict == "unstable"


def test_converged_requires_the_recent_loss_to_settle():
    """H15: "converged ... moving 30%" was possible; now converged means the last 3 losses within 2%."""
    d = diagnose(_history([1.0, 0.5, 0.3, 0.29, 0.29], [1.0, 0.5, 0.3, 0.29, 0.29]))
    assert d.verdict == "inconclusive" and d.findings[0].code == "diagnosis-not-settled"
    d = diagnose(_history([1.0, 0.5, 0.3, 0.29, 0.29, 0.29], [1.0, 0.5, 0.3, 0.29, 0.291, 0.2905]))
    assert d.verdict == "converged"
    assert "the last 3 epochs within 0.3% of each other" in d.findings[0].message


UNDER_TRAIN = [0.95, 0.93, 0.92, 0.92, 0.919, 0.919, 0.918, 0.918, 0.918]
UNDER_VAL = [0.97, 0.95, 0.94, 0.94, 0.94, 0.941, 0.94, 0.94, 0.94]


def test_underfitting_never_suggests_a_window_that_leaves_few_training_windows():
    """H15: "window 96 -> 192" on a series where 192 leaves one training window."""
    cfg = validate_config({"data": {"window": 96, "horizon": 24}, "model": {"hidden_size": 64}})
    info = DataInfo(train_points=(216,), window=96, horizon=24, wider_parameters=10_000)
    d = diagnose(_history(UNDER_TRAIN, UNDER_VAL), config=cfg, data_info=info)
    assert d.verdict == "underfitting"
    fix = d.findings[0].fix
    assert "data.window" not in fix and "192" not in fix
    assert info.windows(192) == 1 and not info.window_fits(192) and not info.window_fits(144)


def test_underfitting_suggests_a_window_that_fits_with_the_windows_left():
    cfg = validate_config({"data": {"window": 24}, "model": {"hidden_size": 64}})
    info = DataInfo(train_points=(2000, 1500), window=24, horizon=1, wider_parameters=1000)
    d = diagnose(_history(UNDER_TRAIN, UNDER_VAL), config=cfg, data_info=info)
    assert "a longer window: data.window 24 -> 48 (3,404 of 3,452 training windows left)" in d.findings[0].fix


def test_underfitting_with_few_windows_per_parameter_asks_for_data_not_capacity():
    cfg = validate_config({"data": {"window": 96}, "model": {"hidden_size": 64}})
    info = DataInfo(train_points=(150,), window=96, horizon=1, wider_parameters=60_000)
    d = diagnose(_history(UNDER_TRAIN, UNDER_VAL), config=cfg, data_info=info)
    fix = d.findings[0].fix
    assert "hidden_size" not in fix and "data.window" not in fix
    assert fix.startswith("insufficient evidence for a bigger model: 54 training windows; more data")


def test_overfitting_never_suggests_a_hidden_size_below_the_floor():
    cfg = validate_config({"model": {"hidden_size": 6, "num_layers": 2, "dropout": 0.1}})
    d = diagnose(_history([1, .5, .3, .2, .1], [1, .5, .6, .7, .8]), config=cfg)
    assert d.verdict == "overfitting"
    assert "hidden_size" not in d.findings[0].fix
    assert d.findings[0].fix.startswith("raise model.dropout from 0.1 towards 0.3, or train on more data")


def test_data_info_of_a_prepared_run_counts_its_windows():
    from lstmcast import Forecaster

    df = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=120, freq="h"),
                       "y": np.sin(np.arange(120) / 4.0)})
    fc = Forecaster(small_config(data={"horizon": 2, "window": 8},
                                 train={"max_epochs": 1, "threads": 1})).fit(df)
    info = data_info_of(fc.prepared_, fc.training_.doctor)
    assert info.window == 8 and info.horizon == 2
    assert info.windows() == len(fc.prepared_.index.train)
    assert info.wider_parameters > fc.training_.doctor.n_parameters


def test_extra_findings_are_appended_and_serialised():
    gate = Finding("warning", "gates-saturated", "78% of forget gates saturated in layer 2", "lower train.lr")
    d = diagnose(_history([1.0, 0.5, 0.3, 0.29, 0.29, 0.29], [1.0, 0.5, 0.3, 0.29, 0.29, 0.29]), extra=[gate])
    assert isinstance(d, Diagnosis)
    assert d.findings[-1] == gate
    data = json.loads(json.dumps(d.as_dict()))
    assert data["verdict"] == "converged" and data["best_epoch"] == 4 and data["epochs"] == 6
    assert data["findings"][-1] == gate.as_dict()
    assert d.lines()[0] == "diagnosis: converged"
    assert d.lines()[-1] == f"  {gate}"


@pytest.mark.slow
def test_real_run_that_overfits_on_purpose():
    """Tiny data (100 points of noise), a large model: memorises the training windows, validation rises."""
    from lstmcast import Forecaster

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=100, freq="h"), "y": rng.standard_normal(100)})
    cfg = small_config(data={"horizon": 2, "window": 8, "val_fraction": 0.25, "test_fraction": 0.15},
                       model={"hidden_size": 128, "num_layers": 2, "dropout": 0.0, "window_norm": "none"},
                       train={"max_epochs": 40, "patience": 40, "batch_size": 8, "lr": 5e-3, "threads": 1})
    fc = Forecaster(cfg).fit(df)
    assert "few-windows-per-parameter" in [f.code for f in fc.training_.doctor.findings]  # the doctor warned before
    d = diagnose(fc.history_, config=fc.config_)
    assert d.verdict == "overfitting", [(h["train_loss"], h["val_loss"]) for h in fc.history_]
    assert d.summary == f"overfitting from epoch {d.best_epoch}"
    assert fc.history_[-1]["train_loss"] < 0.5 * fc.history_[d.best_epoch - 1]["train_loss"]
    assert "halve model.hidden_size (128 -> 64)" in d.findings[0].fix
