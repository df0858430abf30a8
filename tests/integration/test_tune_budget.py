"""The objective (validation loss or backtest MASE) and the time budget of a study."""

from __future__ import annotations

import pytest

from lstmcast.cli_output import print_stop
from lstmcast.config import validate_config
from lstmcast.errors import ConfigError
from lstmcast.progress import trials_eta
from lstmcast.tuning.study import TuneOptions, Tuner, no_best_trial_error
from tests.conftest import seasonal_frame, small_config


def _cfg(tmp_path, **tune):
    csv = tmp_path / "s.csv"
    seasonal_frame(300).to_csv(csv, index=False)
    return validate_config(small_config(
        data={"path": str(csv), "window": None}, train={"max_steps_per_epoch": 3, "threads": 1},
        tune={"max_epochs": 2, "window_periods": [1, 2], "hidden_size": [4, 8], "batch_size": [32], **tune}))


def test_mase_objective_scores_trials_by_backtest_mase(tmp_path):
    seen = []
    cfg = _cfg(tmp_path, trials=2, objective="mase", pruner="none")
    with Tuner(cfg, TuneOptions(run_dir=tmp_path / "run")) as tuner:
        summary = tuner.run(on_trial=seen.append)
        trials = tuner.study.get_trials()
    assert summary["objective"] == "mase" and summary["stopped_by"] == "trials"
    # "k of N" and an ETA after each trial: one trial left after the first, none after the second
    assert [(o.done, o.total) for o in seen] == [(1, 2), (2, 2)]
    assert seen[0].eta_s > 0 and seen[1].eta_s == 0
    for t in trials:
        assert 0.0 < t.value < float("inf")
        assert t.value != t.user_attrs["best_val_loss"]  # the value is the MASE, not the validation loss
        assert list(t.intermediate_values) == [1, 2]  # pruning still watches the per-epoch validation loss
    assert "# best trial" in (tmp_path / "run" / "best.yaml").read_text()


def test_timeout_stops_starting_trials(tmp_path, capsys):
    with Tuner(_cfg(tmp_path, trials=5), TuneOptions(run_dir=tmp_path / "run", timeout_s=1e-6)) as tuner:
        summary = tuner.run()
    assert summary["trials"] == 0 and summary["best"] is None and summary["stopped_by"] == "timeout"
    print_stop(summary, 5, "1s")
    assert "the timeout (--timeout 1s) stopped the study after 0 of 5 trials" in capsys.readouterr().out
    err = no_best_trial_error(summary)
    assert isinstance(err, ConfigError)
    with pytest.raises(ConfigError, match=r"no trial completed \(no trials\): raise --trials or --timeout"):
        raise err


def test_trials_eta_is_the_mean_trial_time_times_the_trials_left_capped_by_the_timeout():
    import time

    assert trials_eta(30.0, 3, 7, None) == 70.0  # 10 s a trial, 7 left
    assert trials_eta(30.0, 0, 7, None) is None
    capped = trials_eta(30.0, 3, 7, time.monotonic() + 20.0)  # 20 s to the timeout, then the trial running
    assert 29.0 <= capped <= 30.0
