"""The diagnosis after training: read the learning curves, name what happened, say what to change.

Verdicts: converged, still-improving, overfitting (from epoch k), underfitting, unstable, and
inconclusive (too little evidence: fewer than MIN_EPOCHS epochs or MIN_STEPS optimizer steps, or a
loss that still moves without a trend). Every condition found becomes a Finding with the numbers and
a concrete change; the verdict is the most pressing one. Losses are on the scaled series (standard
scaling: a loss near 1.0 is about what predicting the series mean scores; with ``data.scaling: diff``, a table
of seasonal series, the unit is the mean seasonal change, and the underfitting check is off).

A suggested change is one the doctor would accept: a longer window only if every series still holds a
training window and enough windows are left (needs ``data_info``), a smaller model never below
HIDDEN_FLOOR units; otherwise the fix says to get more data or train longer.

>>> h = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "skipped_steps": 0} for e in range(1, 6)]
>>> diagnose(h).verdict
'still-improving'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lstmcast.findings import Finding
from lstmcast.model.estimate import n_parameters
from lstmcast.model.sizing import resolve_model

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.doctor.record import DoctorReport

# Thresholds, each stated in the finding it triggers.
SPIKE = 1.5  # an epoch's training loss above 1.5x the best so far, undoing half the progress, is a spike
RISE = 0.10  # validation 10% above its best, while training reached new lows, is overfitting
IMPROVING = 0.01  # the monitored loss fell more than 1% over the last epochs: still improving
FLAT = 0.02  # training loss moved less than 2% over the last third of the run: flat
HIGH = 0.5  # ... and stayed above 0.5 (scaled units): high
RECENT = 3  # epochs that count as "the last epochs"
CLIPPED = 0.5  # gradient clipping on more than half the steps of the last epoch
MIN_EPOCHS = 3  # epochs (= validation checks) before the curve is read at all
MIN_STEPS = 30  # optimizer steps in all before the curve is read at all
SETTLED = 0.02  # converged: the last RECENT monitored losses lie within 2% of each other
HIDDEN_FLOOR = 4  # never suggest a model.hidden_size below this
MIN_WINDOWS_LEFT = 50  # a longer window must leave this many training windows (and half of the current ones)
MIN_WINDOWS_PER_PARAMETER = 0.01  # the doctor's overfitting-risk line (doctor_checks.py): more capacity stays above


@dataclass(frozen=True)
class DataInfo:
    """The few numbers about the data that keep the suggestions feasible (see ``data_info_of``).

    ``train_points``: training points per series (before validation and test); ``wider_parameters``: the
    parameter count with a doubled model.hidden_size (None: unknown)."""

    train_points: tuple[int, ...]
    window: int
    horizon: int
    wider_parameters: int | None = None

    def windows(self, window: int | None = None) -> int:
        """Training windows with ``window`` (default: the current one): window_starts() per series, summed."""
        w = self.window if window is None else window
        return sum(max(0, n - w - self.horizon + 1) for n in self.train_points)

    def window_fits(self, window: int) -> bool:
        """The doctor refuses a window some series cannot hold; we also refuse one that leaves few windows."""
        left = self.windows(window)
        return (min(self.train_points, default=0) >= window + self.horizon
                and left >= max(MIN_WINDOWS_LEFT, self.windows() // 2))


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


def data_info_of(prepared: Prepared | None, doctor: DoctorReport | None = None) -> DataInfo | None:
    """DataInfo from a ``Prepared`` and the DoctorReport (Forecaster.training_.prepared / .doctor), if any."""
    if prepared is None:
        return None
    wider = None
    if doctor is not None:
        wider = n_parameters(replace(doctor.dims, hidden=2 * doctor.dims.hidden))
    return DataInfo(tuple(int(sp.train_end) for sp in prepared.splits), int(prepared.window),
                    int(prepared.horizon), wider)


def diagnose(history: list[dict[str, Any]], extra: list[Finding] | None = None, *,
             config: ForecastConfig | None = None, data_info: DataInfo | None = None) -> Diagnosis:
    """Diagnose a run from ``Forecaster.history_`` (one dict per epoch); ``extra`` findings (e.g. from the
    hidden-state monitor) are appended; ``config`` turns the suggestions into concrete numbers; ``data_info``
    (series lengths, window) keeps a suggested window one the data can hold. Keyword-only from ``config`` on,
    so new inputs can be added without breaking callers."""
    extra = list(extra or [])
    if config is not None and "auto" in (config.model.hidden_size, config.model.dropout):
        config = config.model_copy(update={"model": resolve_model(config.model, None, 1, 1, 1, 1)})
    n = len(history)
    steps = sum(int(h.get("steps", 0)) for h in history) if all("steps" in h for h in history) else None
    if n < 2:
        return _inconclusive(n, steps, extra, data_info)
    c = _Curves(train=[float(h["train_loss"]) for h in history],
                val=[float(h.get("val_loss", math.nan)) for h in history],
                lr=float(history[0].get("lr", math.nan)), skipped=[int(h.get("skipped_steps", 0)) for h in history],
                clipped=float(history[-1].get("clipped_fraction", 0.0)))
    mon = c.monitored
    best = min(range(n), key=lambda i: mon[i] if math.isfinite(mon[i]) else math.inf)
    unstable = _unstable(c, config)
    if unstable is None and (n < MIN_EPOCHS or (steps is not None and steps < MIN_STEPS)):
        return _inconclusive(n, steps, extra, data_info)
    checks = [("unstable", unstable), ("overfitting", _overfitting(c, best, config)),
              ("still-improving", _improving(mon, best, config)),
              ("underfitting", _underfitting(c, best, config, data_info))]
    found = [(verdict, f) for verdict, f in checks if f is not None]
    if found:
        verdict = found[0][0]
        summary = f"overfitting from epoch {best + 1}" if verdict == "overfitting" else verdict.replace("-", " ")
    else:
        settled = _converged(mon, best)
        verdict, summary = ("converged", "converged") if settled.code == "diagnosis-converged" else \
            ("inconclusive", "inconclusive: the loss has not settled")
        found = [(verdict, settled)]
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
        fix = (f"halve model.hidden_size ({m.hidden_size} -> {m.hidden_size // 2}) or {dropout}"
               if m.hidden_size // 2 >= HIDDEN_FLOOR else f"{dropout}, or train on more data")
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


def _underfitting(c: _Curves, best: int, config: ForecastConfig | None,
                  info: DataInfo | None) -> Finding | None:
    if config is not None and config.data.scaling == "diff":
        return None  # losses in units of the mean seasonal change: 1.0 is not "predicting the mean"
    train, mon = c.train, c.monitored
    k = max(2, len(train) // 3)
    moved = abs(_pct(train[-1 - min(k, len(train) - 1)], train[-1]))
    if moved >= 100 * FLAT or train[-1] < HIGH or mon[best] < HIGH:
        return None
    msg = (f"training and validation loss are flat and high: training {train[-1]:.4g} moved {moved:.1f}% over "
           f"the last {k} epochs, best validation {mon[best]:.4g} (1.0 is about predicting the mean)")
    return Finding("warning", "diagnosis-underfitting", msg, "; ".join(_underfitting_fixes(config, info)) +
                   "; if the series is mostly noise, compare with the naive baselines in metrics.json first")


def _underfitting_fixes(config: ForecastConfig | None, info: DataInfo | None) -> list[str]:
    """Only changes the data can carry: capacity while the doctor's windows-per-parameter line holds, a
    window only if enough training windows are left; else the honest answer is more data."""
    if config is None:
        return ["more capacity (a larger model.hidden_size or model.num_layers) or a longer data.window"]
    m, fixes = config.model, []
    W = info.windows() if info is not None else None
    if W is None or info is None or info.wider_parameters is None or \
            W / info.wider_parameters >= MIN_WINDOWS_PER_PARAMETER:
        fixes.append(f"more capacity: model.hidden_size {m.hidden_size} -> {2 * m.hidden_size} or model.num_layers "
                     f"{m.num_layers} -> {m.num_layers + 1}")
    window = info.window if info is not None else config.data.window
    if window and info is not None:
        longer = next((w for w in (2 * window, window + window // 2) if info.window_fits(w)), None)
        if longer is not None:
            fixes.append(f"a longer window: data.window {window} -> {longer} ({info.windows(longer):,} of "
                         f"{info.windows():,} training windows left)")
    elif window:
        fixes.append(f"a longer window: data.window {window} -> {2 * window} (if the series are long enough)")
    if m.dropout >= 0.3:
        fixes.append(f"less dropout (now {m.dropout:g})")
    if not fixes:
        return [f"insufficient evidence for a bigger model: {W:,} training windows; more data (longer or more "
                "series) or longer training"]
    return [", or ".join(fixes)]


def _converged(mon: list[float], best: int) -> Finding:
    """Converged only if the last RECENT losses lie within SETTLED of each other; else not yet settled."""
    n = len(mon)
    last = mon[-RECENT:]
    moved = 100 * (max(last) - min(last)) / abs(min(last)) if min(last) else math.inf
    if moved < 100 * SETTLED:
        return Finding("info", "diagnosis-converged",
                       f"the loss settled: best {mon[best]:.4g} in epoch {best + 1} of {n}, the last {len(last)} "
                       f"epochs within {moved:.1f}% of each other")
    return Finding("advice", "diagnosis-not-settled",
                   f"the loss still moves {moved:.1f}% over the last {len(last)} epochs without a clear trend (best "
                   f"{mon[best]:.4g} in epoch {best + 1} of {n}): insufficient evidence for a verdict",
                   "train longer (a larger train.patience lets early stopping wait) or on more data; a noisy "
                   "validation loss also steadies with more validation windows (data.val_fraction)")


def _inconclusive(n: int, steps: int | None, extra: list[Finding], info: DataInfo | None) -> Diagnosis:
    """Too few epochs or optimizer steps to read a curve: say so, and how to get the evidence."""
    done = f"{n} epoch(s)" + (f" of {steps} optimizer step(s) in all" if steps is not None else "")
    fix = "insufficient evidence: train longer (train.max_epochs, train.patience)"
    if steps is not None and n and steps / n < MIN_STEPS / MIN_EPOCHS:
        windows = f" ({info.windows():,} training windows)" if info is not None else ""
        fix += (f"; each epoch is only {steps / n:.3g} step(s){windows}: more data (longer or more series) or a "
                "smaller train.batch_size gives more steps per epoch")
    f = Finding("advice", "diagnosis-inconclusive",
                f"{done} are too few to read a learning curve (the diagnosis needs >= {MIN_EPOCHS} epochs and >= "
                f"{MIN_STEPS} optimizer steps)", fix)
    return Diagnosis("inconclusive", "inconclusive: insufficient evidence", [f, *extra], epochs=n)
