"""Honest small-sample output (H17): fANOVA importances with few trials carry a caveat or are skipped, trial
and epoch axes tick at whole numbers, log axes carry enough labels, the monitor's budget is claimed only
when met."""

from __future__ import annotations

import logging

import pytest

from lstmcast.report.html import _overhead_text
from lstmcast.tuning import results as tuning_report


def _study(n: int, seed: int = 0):
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    def objective(t):
        for name, choices in (("num_layers", [1]), ("bidirectional", [False]), ("residual", [False]),
                              ("batch_size", [32]), ("window", [24])):
            t.suggest_categorical(name, choices)  # fixed: best.yaml needs every parameter
        return (t.suggest_float("lr", 1e-4, 1e-1, log=True) * 10) ** 2 + t.suggest_int("hidden_size", 4, 64) / 100

    study.optimize(objective, n_trials=n)
    return study


def test_below_five_trials_no_importances_and_the_note_says_why():
    study = _study(3)
    assert tuning_report.importances(study) == {}
    assert tuning_report.importance_note(3, {}) == ("no parameter importances: 3 complete trial(s), they need >= 5 "
                                                     "(>= ~20 for a stable ranking)")


def test_few_trials_get_importances_with_a_caveat_and_many_without():
    study = _study(8)
    imp = tuning_report.importances(study)
    assert {"lr", "hidden_size"} <= set(imp)
    assert tuning_report.importance_note(8, imp) == ("with 8 trials these importances are rough; >= ~20 trials "
                                                     "for a stable ranking")
    assert tuning_report.importance_note(25, imp) is None


def test_summary_json_holds_the_note(tmp_path):
    from lstmcast.config import validate_config

    summary = tuning_report.write_results(tmp_path, validate_config({}), _study(6), "val", {})
    assert summary["importance_note"].startswith("with 6 trials these importances are rough")
    assert (tmp_path / "importances.png").stat().st_size > 1000


def _captured(monkeypatch, module, name="_save_png"):
    figs = []
    monkeypatch.setattr(module, name, lambda fig, path: figs.append(fig))
    return figs


def _labels(ax):
    """The y tick labels a reader sees: non-empty, inside the view limits, major and minor."""
    ax.figure.canvas.draw()
    lo, hi = sorted(ax.get_ylim())
    out = []
    for locs, labels in ((ax.yaxis.get_majorticklocs(), ax.yaxis.get_majorticklabels()),
                         (ax.yaxis.get_minorticklocs(), ax.yaxis.get_minorticklabels())):
        out += [t.get_text() for x, t in zip(locs, labels) if lo <= x <= hi and t.get_text()]
    return out


def test_trial_axis_has_whole_number_ticks(monkeypatch, tmp_path):
    figs = _captured(monkeypatch, tuning_report)
    rows = [{"trial": i, "state": "complete", "value": v} for i, v in enumerate([0.9, 0.5, 0.45])]
    tuning_report.history_plot(rows, "val", tmp_path / "h.png")
    ax = figs[0].axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


@pytest.mark.parametrize("values", [[0.9, 0.5, 0.3, 0.09], [2.0, 0.5, 0.11, 0.12, 0.15]])
def test_a_log_axis_spanning_about_a_decade_has_at_least_three_labels(monkeypatch, tmp_path, values):
    figs = _captured(monkeypatch, tuning_report)
    rows = [{"trial": i, "state": "complete", "value": v} for i, v in enumerate(values)]
    tuning_report.history_plot(rows, "val", tmp_path / "h.png")
    ax = figs[0].axes[0]
    assert ax.get_yscale() == "log"
    assert len(_labels(ax)) >= 3, _labels(ax)


def test_values_within_a_decade_stay_on_a_linear_axis(monkeypatch, tmp_path):
    from lstmcast.report import plots as reporting

    figs = _captured(monkeypatch, reporting, "_save")
    history = [{"epoch": e, "train_loss": 0.5 - 0.01 * e, "val_loss": 0.55 - 0.01 * e} for e in range(1, 4)]
    reporting.loss_plot(history, tmp_path / "loss.png", best_epoch=3)
    ax = figs[0].axes[0]
    assert ax.get_yscale() == "linear" and len(_labels(ax)) >= 3
    assert all(float(t).is_integer() for t in ax.get_xticks())


def test_monitor_budget_is_claimed_only_when_met():
    base = {"probe_seconds": 1.06, "train_seconds": 10.0, "fraction": 0.15, "max_overhead": 0.05}
    over = _overhead_text({**base, "within_budget": False, "postponed_probes": 2}, 2)
    assert over == ("The monitor took 15.0% of the training time in all (TensorBoard writing included), its 2 "
                    "probes 10.6%, over their 5% budget (the first and the last probe always run); 2 probe(s) "
                    "postponed to keep to it.")
    assert "kept under" not in over and "within" not in over
    met = _overhead_text({**base, "probe_seconds": 0.3, "within_budget": True}, 3)
    assert met.endswith("its 3 probes 3.0%, within their 5% budget.")
    old = _overhead_text({"probe_seconds": 0.3, "train_seconds": 10.0, "fraction": 0.04}, 3)
    assert "budget" not in old  # a monitor.json without the budget claims nothing
