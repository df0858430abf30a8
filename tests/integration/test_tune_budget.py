"""The objective (validation loss or backtest MASE) and the time budget of a study."""

from __future__ import annotations

import pytest

from lstmcast.config import validate_config
from lstmcast.errors import ConfigError
from lstmcast.tuning.study import Tuner, TuneOptions, no_best_trial_error
from tests.conftest import seasonal_frame, small_config


def _cfg(tmp_path, **tune):
    csv = tmp_path / "s.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    return validate_config(small_config(
        data={"path": str(csv), "window": None}, train={"max_steps_per_epoch": 3, "threads": 1},
        tune={"max_epochs": 2, "window_periods": [1, 2], "hidden_size": [4, 8], "batch_size": [32], **tune}))


def test_mase_objective_scores_trials_by_backtest_mase(tmp_path):
    with Tuner(_cfg(tmp_path, trials=2, objective="mase", pruner="none"), TuneOptions(run_dir=tmp_path / "run")) as tuner:
        summary = tuner.run()
        trials = tuner.study.get_trials()
    assert summary["objective"] == "mase"
    for t in trials:
        assert 0.0 < t.value < float("inf")
        assert t.value != t.user_attrs["best_val_loss"]  # the value is the MASE, not the validation loss
        assert list(t.intermediate_values) == [1, 2]  # pruning still watches the per-epoch validation loss
    assert "# best trial" in (tmp_path / "run" / "best.yaml").read_text()


def test_timeout_stops_starting_trials(tmp_path):
    with Tuner(_cfg(tmp_path, trials=5), TuneOptions(run_dir=tmp_path / "run", timeout_s=1e-6)) as tuner:
        summary = tuner.run()
    assert summary["trials"] == 0 and summary["best"] is None
    err = no_best_trial_error(summary)
    assert isinstance(err, ConfigError)
    with pytest.raises(ConfigError, match=r"no trial completed \(no trials\): raise --trials or --timeout"):
        raise err
