"""The diagnosis after training: read the learning curves, name what happened, say what to change.

Verdicts: converged, still-improving, overfitting (from epoch k), underfitting, unstable, and
inconclusive (fewer than two epochs). Every condition found becomes a Finding with the numbers and
a concrete change; the verdict is the most pressing one. Losses are on the scaled series (standard
scaling: a loss near 1.0 is about what predicting the series mean scores).

>>> h = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "skipped_steps": 0} for e in range(1, 6)]
>>> diagnose(h).verdict
'still-improving'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .findings import Finding

if TYPE_CHECKING:
    from .config import ForecastConfig

# Thresholds, each stated in the finding it triggers.
SPIKE = 1.5  # an epoch's training loss above 1.5x the best so far, undoing half the progress, is a spike
RISE = 0.10  # validation 10% above its best, while training reached new lows, is overfitting
IMPROVING = 0.01  # the monitored loss fell more than 1% over the last epochs: still improving
FLAT = 0.02  # training loss moved less than 2% over the last third of the run: flat
HIGH = 0.5  # ... and stayed above 0.5 (scaled units): high
RECENT = 3  # epochs that count as "the last epochs"
CLIPPED = 0.5  # gradient clipping on more than half the steps of the last epoch


@dataclass
class Diagnosis:
    verdict: str
    summary: str
    findings: list[Finding] = field(default_factory=list)
    epochs: int = 0
    best_epoch: int | None = None
    numbers: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "summary": self.summary, "epochs": self.epochs,
                "best_epoch": self.best_epoch, "numbers": dict(self.numbers),
                "findings": [f.as_dict() for f in self.findings]}

    def lines(self) -> list[str]:
        """What ``lstmcast train`` prints."""
        return [f"diagnosis: {self.summary}"] + [f"  {f}" for f in self.findings]


@dataclass
class _Curves:
    train: list[float]
    val: list[float]
    lr: float
    skipped: list[int]
    clipped: float

    @property
    def monitored(self) -> list[float]:
        """Validation loss where it exists, else training loss (what early stopping watches)."""
        return self.val if all(math.isfinite(v) for v in self.val) else self.train


def diagnose(history: list[dict[str, Any]], extra: list[Finding] | None = None, *,
             config: ForecastConfig | None = None) -> Diagnosis:
    """Diagnose a run from ``Forecaster.history_`` (one dict per epoch); ``extra`` findings (e.g. from the
    hidden-state monitor) are appended; ``config`` turns the suggestions into concrete numbers."""
    extra = list(extra or [])
    n = len(history)
    if n < 2:
        f = Finding("advice", "diagnosis-inconclusive", f"{n} epoch(s) are too few to read a learning curve",
                    "train for more epochs (train.max_epochs)")
        return Diagnosis("inconclusive", "inconclusive: too few epochs", [f, *extra], epochs=n)
    c = _Curves(train=[float(h["train_loss"]) for h in history],
                val=[float(h.get("val_loss", math.nan)) for h in history],
                lr=float(history[0].get("lr", math.nan)), skipped=[int(h.get("skipped_steps", 0)) for h in history],
                clipped=float(history[-1].get("clipped_fraction", 0.0)))
    mon = c.monitored
    best = min(range(n), key=lambda i: mon[i] if math.isfinite(mon[i]) else math.inf)
    checks = [("unstable", _unstable(c, config)), ("overfitting", _overfitting(c, best, config)),
              ("still-improving", _improving(mon, best, config)), ("underfitting", _underfitting(c, best, config))]
    found = [(verdict, f) for verdict, f in checks if f is not None]
    if found:
        verdict = found[0][0]
        summary = f"overfitting from epoch {best + 1}" if verdict == "overfitting" else verdict.replace("-", " ")
    else:
        verdict, summary = "converged", "converged"
        found = [("converged", _converged(mon, best))]
    findings = [f for _, f in found]
    if verdict != "unstable" and c.clipped > CLIPPED:
        findings.append(Finding("advice", "clipping-frequent",
                                f"gradient clipping acted on {c.clipped:.0%} of the steps of the last epoch",
                                "the learning rate may be high: try a lower train.lr"))
    numbers = {"best_loss": mon[best], "last_loss": mon[-1], "first_train_loss": c.train[0],
               "last_train_loss": c.train[-1], "skipped_steps": float(sum(c.skipped))}
    return Diagnosis(verdict, summary, findings + extra, epochs=n, best_epoch=best + 1, numbers=numbers)


def _pct(a: float, b: float) -> float:
    """Relative change from a to b in percent."""
    return 100.0 * (b - a) / abs(a) if a else math.inf


def _spike(train: list[float], e: int) -> bool:
    """Non-finite, or above SPIKE x the best so far and more than half way back to the worst so far."""
    if not math.isfinite(train[e]):
        return True
    best, worst = min(train[:e]), max(train[:e])
    return train[e] > SPIKE * best and train[e] > best + 0.5 * (worst - best)


def _unstable(c: _Curves, config: ForecastConfig | None) -> Finding | None:
    skipped = sum(c.skipped)
    spikes = [e + 1 for e in range(1, len(c.train)) if _spike(c.train, e)]
    if not skipped and not spikes:
        return None
    parts = []
    if skipped:
        epochs = [e + 1 for e, s in enumerate(c.skipped) if s]
        parts.append(f"{skipped} training steps were skipped for a non-finite loss or gradient (epochs {epochs})")
    if spikes:
        parts.append(f"the training loss spiked above {SPIKE}x its best so far in epoch(s) {spikes}")
    lr = config.train.lr if config is not None else c.lr
    clip = "keep train.clip_norm at 1.0" if config is None or config.train.clip_norm else "set train.clip_norm=1.0"
    fix = f"lower train.lr from {lr:g} to {lr / 3:.2g} and {clip}" if math.isfinite(lr) else \
        f"lower train.lr (3x) and {clip}"
    return Finding("warning", "diagnosis-unstable", "; ".join(parts), fix + ", or try a smaller model.hidden_size")


def _overfitting(c: _Curves, best: int, config: ForecastConfig | None) -> Finding | None:
    val, train = c.val, c.train
    if not all(math.isfinite(v) for v in val) or len(val) - best < 3:
        return None
    rise = (val[-1] - val[best]) / abs(val[best]) if val[best] else 0.0
    if rise <= RISE or min(train[best + 1:]) >= train[best]:
        return None
    msg = (f"validation loss bottomed at {val[best]:.4g} in epoch {best + 1} and rose to {val[-1]:.4g} by epoch "
           f"{len(val)} (+{100 * rise:.0f}%) while training loss fell from {train[best]:.4g} to {train[-1]:.4g}")
    if config is not None:
        m = config.model
        dropout = f"raise model.dropout from {m.dropout:g} towards 0.3"
        if m.num_layers == 1:
            dropout += " (with model.num_layers=2: dropout acts between layers)"
        fix = f"halve model.hidden_size ({m.hidden_size} -> {max(1, m.hidden_size // 2)}) or {dropout}"
    else:
        fix = "halve model.hidden_size or raise model.dropout towards 0.3"
    return Finding("warning", "diagnosis-overfitting", msg,
                   fix + f"; the saved model holds the weights of epoch {best + 1}")


def _improving(mon: list[float], best: int, config: ForecastConfig | None) -> Finding | None:
    n = len(mon)
    k = min(RECENT, n - 1)
    drop = -_pct(mon[-1 - k], mon[-1])
    if best != n - 1 or drop <= 100 * IMPROVING:
        return None
    msg = f"the loss still fell {drop:.1f}% over the last {k} epochs, to its best {mon[-1]:.4g} in the last epoch ({n})"
    if config is not None:
        fix = f"train longer: train.max_epochs {config.train.max_epochs} -> {2 * config.train.max_epochs}"
    else:
        fix = "train longer: raise train.max_epochs"
    return Finding("advice", "diagnosis-still-improving", msg, fix)


def _underfitting(c: _Curves, best: int, config: ForecastConfig | None) -> Finding | None:
    train, mon = c.train, c.monitored
    k = max(2, len(train) // 3)
    moved = abs(_pct(train[-1 - min(k, len(train) - 1)], train[-1]))
    if moved >= 100 * FLAT or train[-1] < HIGH or mon[best] < HIGH:
        return None
    msg = (f"training and validation loss are flat and high: training {train[-1]:.4g} moved {moved:.1f}% over "
           f"the last {k} epochs, best validation {mon[best]:.4g} (1.0 is about predicting the mean)")
    if config is not None:
        m, d = config.model, config.data
        fix = (f"more capacity: model.hidden_size {m.hidden_size} -> {2 * m.hidden_size} or model.num_layers "
               f"{m.num_layers} -> {m.num_layers + 1}")
        if d.window:
            fix += f", or a longer window: data.window {d.window} -> {2 * d.window}"
        if m.dropout >= 0.3:
            fix += f", or less dropout (now {m.dropout:g})"
    else:
        fix = "more capacity (a larger model.hidden_size or model.num_layers) or a longer data.window"
    return Finding("warning", "diagnosis-underfitting", msg,
                   fix + "; if the series is mostly noise, compare with the naive baselines in metrics.json first")


def _converged(mon: list[float], best: int) -> Finding:
    n = len(mon)
    k = min(RECENT, n - 1)
    moved = abs(_pct(mon[-1 - k], mon[-1]))
    return Finding("info", "diagnosis-converged",
                   f"the loss settled: best {mon[best]:.4g} in epoch {best + 1} of {n}, moving {moved:.1f}% over the "
                   f"last {k} epochs")
