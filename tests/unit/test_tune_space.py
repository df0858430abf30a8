"""The search space of `lstmcast tune`: conditional dropout, ranges from the data, overrides, pruning hook."""

from __future__ import annotations

import optuna
import pytest

from lstmcast import Forecaster
from lstmcast.config import TuneConfig, load_config, validate_config
from lstmcast.errors import ConfigError, DataError
from lstmcast.tuning.space import apply_params, resolve_space, suggest
from lstmcast.tuning.study import PruningReporter, make_sampler, parse_duration
from tests.conftest import seasonal_frame, small_config

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(**tune):
    return resolve_space(TuneConfig(**tune), n_features=1, season=24, horizon=6, longest_window=200)


def test_no_trial_ever_has_dropout_with_one_layer():
    space = _space(num_layers=(1, 3))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    base = validate_config(small_config())
    layers_seen = set()
    for _ in range(300):
        trial = study.ask()
        params = suggest(trial, space)
        layers_seen.add(params["num_layers"])
        cfg = apply_params(base, params)  # validate_config refuses dropout > 0 with one layer (C1)
        if params["num_layers"] == 1:
            assert "dropout" not in trial.params
            assert cfg.model.dropout == 0.0
        else:
            assert 0.0 <= trial.params["dropout"] <= 0.3
            assert cfg.model.dropout == trial.params["dropout"]
        study.tell(trial, 1.0)
    assert layers_seen == {1, 2, 3}


def test_tpe_keeps_the_space_conditional():
    space = _space(num_layers=(1, 2))
    study = optuna.create_study(sampler=make_sampler(0, 0, False))
    for _ in range(30):
        trial = study.ask()
        p = suggest(trial, space)
        study.tell(trial, p["lr"] * p["hidden_size"])
    assert all(("dropout" in t.params) == (t.params["num_layers"] > 1) for t in study.trials)


def test_hidden_size_centred_on_two_to_four_times_the_features():
    one = resolve_space(TuneConfig(), n_features=1, season=None, horizon=6, longest_window=100)
    ten = resolve_space(TuneConfig(hidden_factor=2), n_features=10, season=None, horizon=6, longest_window=100)
    assert one.hidden_size == (4, 32)  # [2F / 8, 4F * 8], at least 4
    assert ten.hidden_size == (10, 80)  # [2F / 2, 4F * 2]
    assert _space(hidden_size=(8, 8)).hidden_size == (8, 8)


def test_window_in_seasonal_periods_capped_to_the_training_split():
    space = resolve_space(TuneConfig(window_periods=(1, 4)), n_features=1, season=24, horizon=6, longest_window=80)
    assert (space.window, space.window_step) == ((24, 72), 24)
    no_season = resolve_space(TuneConfig(), n_features=1, season=None, horizon=12, longest_window=500)
    assert (no_season.window, no_season.window_step) == ((12, 48), 12)
    with pytest.raises(DataError, match=r"windows of at least 48 .* up to 40.*lower tune.window_periods"):
        resolve_space(TuneConfig(window_periods=(2, 3)), n_features=1, season=24, horizon=6, longest_window=40)


def test_bad_ranges_are_reported_together():
    with pytest.raises(ConfigError, match="2 problems") as err:
        _space(lr=(1e-2, 1e-4), num_layers=(0, 2))
    assert "tune.lr: low 0.01 is above high 0.0001" in str(err.value)
    assert "tune.num_layers must start at >= 1" in str(err.value)


def test_tune_section_is_overridable_from_the_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tune:\n  lr: [0.001, 0.005]\n  batch_size: [8, 24]\n  bidirectional: [false]\n")
    cfg = load_config(path, ["tune.num_layers=[2, 2]"])
    space = resolve_space(cfg.tune, n_features=1, season=24, horizon=6, longest_window=100)
    assert space.lr == (0.001, 0.005)
    assert space.batch_size == (8, 24)
    assert space.bidirectional == (False,)
    assert space.num_layers == (2, 2)
    with pytest.raises(ConfigError, match=r"unknown key 'tune.lrr' in --set \(did you mean 'tune.lr'\?\)"):
        load_config(path, ["tune.lrr=[0.1, 0.2]"])


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage():
    with pytest.raises(ConfigError, match="expected a duration such as 90s, 30m"):
        parse_duration("30 minutes")


def test_workers_draw_different_configurations():
    space = _space()
    draws = []
    for slot in (0, 1):
        study = optuna.create_study(sampler=make_sampler(0, slot, False))
        draws.append(suggest(study.ask(), space))
    assert draws[0] != draws[1]


def test_pruning_callback_stops_fit_and_propagates():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # prunes any loss > 0
    trial = study.ask()
    reporter = PruningReporter(trial)
    fc = Forecaster(small_config(train={"max_epochs": 5}))
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
        fc.fit(seasonal_frame(300), callbacks=[reporter])
    assert reporter.epochs == 1
    assert list(study.trials[0].intermediate_values) == [1]
