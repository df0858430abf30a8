"""The honest headline: when the model loses to a baseline on the backtest, that is said first.

A run whose learning curves look fine ("converged") can still forecast worse than repeating the last
value or the last season. ``baseline_finding`` compares the model's backtest MASE with the better of
naive and seasonal naive; ``with_headline`` puts that finding at the top of the diagnosis, so the CLI
summary, diagnosis.json and report.html lead with it.

>>> m = {"model": {"MASE": 1.3}, "naive": {"MASE": 1.1}, "seasonal_naive": {"MASE": 1.0}}
>>> baseline_finding(m).code
'loses-to-baseline'
>>> baseline_finding({"model": {"MASE": 0.5}, "naive": {"MASE": 1.1}}) is None
True
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lstmcast.findings import Finding

if TYPE_CHECKING:
    from lstmcast.doctor.diagnosis import Diagnosis

BASELINES = ("naive", "seasonal_naive")
# MASE differences below this are float32 rounding of forecasts, not a loss (both exact on a noiseless series)
FLOAT32_TIE = 1e-6
CURES = ("give more history (a longer series, or several series in a long table)",
         "a smaller model (model.hidden_size=8) or more dropout with model.num_layers>=2",
         "a longer budget (train.min_steps, train.patience)",
         "until then, forecast with the baseline")


def baseline_finding(metrics: dict[str, Any]) -> Finding | None:
    """A warning when the model's backtest MASE is above the best baseline's; None when it wins or ties."""
    model = (metrics.get("model") or {}).get("MASE")
    rows = {b: (metrics.get(b) or {}).get("MASE") for b in BASELINES}
    rows = {b: v for b, v in rows.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if not isinstance(model, (int, float)) or not math.isfinite(model) or not rows:
        return None
    name, best = min(rows.items(), key=lambda kv: kv[1])
    if model <= best + FLOAT32_TIE:
        return None
    label = name.replace("_", " ")
    # a baseline that is exact on the backtest (MASE 0: a noiseless seasonal series) has no relative gap
    worse = f"{100 * (model / best - 1):.0f}% worse" if best > 0 else f"{label} is exact on this series"
    what = f"the model loses to {label} on the backtest: MASE {model:.3g} against {best:.3g} ({worse})"
    return Finding("warning", "loses-to-baseline", what, "; ".join(CURES))


def with_headline(diagnosis: Diagnosis, metrics: dict[str, Any]) -> Diagnosis:
    """``diagnosis`` led by the baseline finding where the model loses (the curve verdict follows it)."""
    found = baseline_finding(metrics)
    if found is None:
        return diagnosis
    summary = f"{found.message}; learning curves: {diagnosis.summary}"
    return replace(diagnosis, verdict="loses-to-baseline", summary=summary, findings=[found, *diagnosis.findings])
