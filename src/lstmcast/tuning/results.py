"""The results of a study, written atomically into the tuning folder.

trials.csv (every trial), best.yaml (the best trial's config: ``lstmcast train -c best.yaml``),
summary.json (counts, best trial, parameter importances), history.png and importances.png.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast import atomic
from lstmcast.report.plots import readable_log_y
from lstmcast.tuning.space import apply_params

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

    from lstmcast.config import ForecastConfig

log = logging.getLogger(__name__)
PARAMS = ("hidden_size", "num_layers", "dropout", "lr", "window", "batch_size", "bidirectional", "residual")
MIN_IMPORTANCE_TRIALS = 5  # below this many complete trials fANOVA ranks noise: no importances at all
STABLE_IMPORTANCE_TRIALS = 20  # from about this many the ranking stops changing from run to run


def counts_as_trial(t: optuna.trial.FrozenTrial) -> bool:
    """Everything but failures of a worker that stopped (they are redone): a trial's own failure counts."""
    from optuna.trial import TrialState

    return t.state != TrialState.FAIL or "failure" in t.user_attrs


def state_name(t: optuna.trial.FrozenTrial) -> str:
    name = t.state.name.lower()
    if name == "fail":
        return f"failed ({t.user_attrs.get('failure', 'worker stopped')})"
    return name


def trial_rows(trials: list[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.number, "state": state_name(t), "value": t.value,
                               "epochs": t.user_attrs.get("epochs"), "seconds": t.user_attrs.get("seconds")}
        row.update({p: t.params.get(p, 0.0 if p == "dropout" and "num_layers" in t.params else None)
                    for p in PARAMS})
        rows.append(row)
    return rows


def best_rows(trials: list[optuna.trial.FrozenTrial], n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` best complete trials, best first."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    return trial_rows(sorted(done, key=lambda t: t.value)[:n])


def _csv(rows: list[dict[str, Any]]) -> str:
    cols = ["trial", "state", "value", "epochs", "seconds", *PARAMS]
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join("" if r.get(c) is None else str(r[c]) for c in cols))
    return "\n".join(lines) + "\n"


def best_config(base: ForecastConfig, best: optuna.trial.FrozenTrial) -> ForecastConfig:
    return apply_params(base, best.params)


def write_progress(run_dir: Path, base: ForecastConfig, study: optuna.Study, objective: str) -> dict[str, Any] | None:
    """trials.csv and best.yaml (cheap: after every trial, so a stopped tuner leaves usable results)."""
    trials = study.get_trials(deepcopy=False)
    atomic.write_text(run_dir / "trials.csv", _csv(trial_rows(trials)))
    best = best_rows(trials, 1)
    if not best:
        return None
    frozen = next(t for t in trials if t.number == best[0]["trial"])
    cfg = best_config(base, frozen)
    header = (f"# best trial {frozen.number} of study {study.study_name!r}: {objective} {frozen.value:.6g}\n"
              "# train it with: lstmcast train -c best.yaml\n")
    atomic.write_text(run_dir / "best.yaml", header + cfg.to_yaml())
    return best[0]


def complete_trials(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def importance_note(n_complete: int, imp: dict[str, float]) -> str | None:
    """The caveat printed with the importances (None: enough trials for a stable ranking)."""
    if n_complete < MIN_IMPORTANCE_TRIALS:
        return (f"no parameter importances: {n_complete} complete trial(s), they need >= {MIN_IMPORTANCE_TRIALS} "
                f"(>= ~{STABLE_IMPORTANCE_TRIALS} for a stable ranking)")
    if not imp:
        return "no parameter importances: the complete trials do not vary enough"
    if n_complete < STABLE_IMPORTANCE_TRIALS:
        return (f"with {n_complete} trials these importances are rough; >= ~{STABLE_IMPORTANCE_TRIALS} trials "
                "for a stable ranking")
    return None


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances over the complete trials; {} where too few trials (MIN_IMPORTANCE_TRIALS) or no
    variation."""
    import optuna

    if complete_trials(study) < MIN_IMPORTANCE_TRIALS:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as exc:
        log.info("no parameter importances: %s", exc)
        return {}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic.write_bytes(path, buf.getvalue())


def history_plot(rows: list[dict[str, Any]], objective: str, path: Path) -> None:
    """Each complete trial's value and the best so far, by trial number."""
    plt = _pyplot()
    done = sorted((r["trial"], r["value"]) for r in rows if r["state"] == "complete" and r["value"] is not None)
    fig, ax = plt.subplots(figsize=(7, 4))
    if done:
        xs, ys = zip(*done)
        best = [min(ys[:i + 1]) for i in range(len(ys))]
        ax.scatter(xs, ys, s=14, color="tab:blue", label="trial")
        ax.step(xs, best, where="post", color="tab:red", label="best so far")
        ax.legend()
    from matplotlib.ticker import MaxNLocator

    if done:
        readable_log_y(ax, ys)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are whole numbers
    ax.set_xlabel("trial")
    ax.set_ylabel("validation loss (scaled)" if objective == "val" else "backtest MASE")
    ax.set_title("Optimisation history")
    _save_png(fig, path)


def importance_plot(imp: dict[str, float], path: Path, note: str | None = None) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.4 * max(3, len(imp)) + 1))
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names], color="tab:green")
    if not imp:
        ax.text(0.5, 0.5, note or "no importances", ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_title("Parameter importances" + (f"\n({note})" if note and imp else ""), fontsize=10)
    _save_png(fig, path)


def write_results(run_dir: Path, base: ForecastConfig, study: optuna.Study, objective: str,
                  space: dict[str, Any]) -> dict[str, Any]:
    """Every result file; returns the summary (also in summary.json)."""
    best = write_progress(run_dir, base, study, objective)
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials)
    imp = importances(study) if best else {}
    note = importance_note(complete_trials(study), imp)
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    summary = {"study": study.study_name, "objective": objective, "trials": len(trials),
               "counted_trials": sum(counts_as_trial(t) for t in trials), "states": states, "best": best,
               "best_trials": best_rows(trials), "importances": imp, "importance_note": note, "space": space}
    atomic.write_json(run_dir / "summary.json", summary)
    history_plot(rows, objective, run_dir / "history.png")
    importance_plot(imp, run_dir / "importances.png", note)
    return summary
