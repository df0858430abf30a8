"""Progress for long work: a rich bar (ETA, loss, validation loss) on a terminal or in a notebook, plain lines
otherwise (CI, files). Used as a training callback; the stages after training (refit, calibration, backtest,
outputs, report) are shown through ``stage``, so the display never sits still without saying why."""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from collections.abc import Iterable
from typing import Any


def interactive(stream: Any = None) -> bool:
    """True on a terminal, or in a Jupyter notebook that can draw rich's bar (ipywidgets installed)."""
    stream = stream or sys.stderr
    if bool(getattr(stream, "isatty", lambda: False)()):
        return True

    return in_notebook() and importlib.util.find_spec("ipywidgets") is not None


def in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def wanted(progress: bool | None, stream: Any = None) -> bool:
    """Whether ``fit(progress=...)`` shows progress: True / False as asked; None: on a terminal or in a notebook
    (a bar, or plain lines in a notebook without ipywidgets), silent in scripts whose output is not a terminal."""
    if progress is not None:
        return bool(progress)
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or in_notebook()


def announce(callbacks: Iterable[Any] | None, text: str) -> None:
    """Tell every progress display among ``callbacks`` (those with a ``stage`` method) that ``text`` began."""
    for cb in callbacks or []:
        stage = getattr(cb, "stage", None)
        if callable(stage):
            stage(text)


def expected_epochs(trainer: Any, epoch: int, total: int) -> int:
    """The epoch training is expected to end at if validation stops improving now: at least until the step
    budget (train.min_steps) is spent, then until patience runs out; never past max_epochs. Without a trainer
    (or once it finished) ``total`` / ``epoch``."""
    if trainer is None or not hasattr(trainer, "cfg"):
        return total
    if getattr(trainer, "finished", False):
        return epoch
    cfg = trainer.cfg
    per = max(1, int(trainer.steps_per_epoch))
    budget = math.ceil(max(0, cfg.min_steps - trainer.step) / per)
    patience = max(1, cfg.patience - trainer.bad_epochs)
    return max(epoch, min(cfg.max_epochs, epoch + max(budget, patience)))


class EpochProgress:
    """Context manager and ``(trainer, record)`` callback reporting each epoch.

    Outside a terminal one line per epoch (every ``every``-th epoch when set, and always the first and the
    last). The ETA counts the epochs training is expected to run (``expected_epochs``: the step budget and
    early stopping's patience), not ``max_epochs``, and only the epochs run in this process (resume).
    ``start_epoch``: the epoch a resumed run continues from. "best" marks an epoch that improved the
    validation loss."""

    def __init__(self, total_epochs: int, stream: Any = None, every: int = 1, label: str = "train",
                 start_epoch: int = 0, rich: bool | None = None):
        self.total, self.stream, self.every, self.label = total_epochs, stream or sys.stderr, max(1, every), label
        self.tty = interactive(self.stream) if rich is None else rich
        self.start = start_epoch
        self._bar: Any = None
        self._task: Any = None
        self._t0 = time.perf_counter()
        self._t_first: float | None = None  # when the first epoch of this process began
        self._first: int | None = None  # epochs done before this process (resume)
        self._best = float("inf")
        self._expected = total_epochs
        self._pending: tuple[Any, str] | None = None  # the last epoch, when its line is not printed yet
        self._stage: tuple[str, float] | None = None
        self._last: int | None = None  # the last epoch reported

    def __enter__(self) -> EpochProgress:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[where]}"), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                 console=Console(file=self.stream), transient=False)
            self._bar.__enter__()
            where = f"epoch {self.start}/{self.total}" + (" (resumed)" if self.start else "")
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.start, where=where,
                                            info="", eta="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end_stage()
        if self._bar is not None:
            if self._last is not None and exc[0] is None:  # the last line left on screen says it ended
                self._bar.update(self._task, where=f"done: {self._last} epochs", info="", eta="")
            self._bar.__exit__(*exc)
        elif self._pending is not None:
            self._print(*self._pending)

    # -- epochs ---------------------------------------------------------------------------------
    def __call__(self, trainer: Any, rec: Any) -> None:
        if self._first is None:
            self._first = rec.epoch - 1
            self._t_first = self._t0 if self._t_first is None else self._t_first
        self._expected = expected_epochs(trainer, rec.epoch, self.total)
        self._last = rec.epoch
        info = f"loss {rec.train_loss:.4g}  val {rec.val_loss:.4g}  lr {rec.lr:.2g}"
        if rec.val_loss < self._best:  # NaN (no validation split) never counts as best
            self._best = rec.val_loss
            info += "  best"
        if rec.skipped_steps:
            info += f"  skipped {rec.skipped_steps}"
        if self._bar is not None:
            self._bar.update(self._task, completed=rec.epoch, total=self._expected, where=self._where(rec.epoch),
                             info=info, eta=f"eta ~{self._eta(rec.epoch):.0f}s")
            return
        if rec.epoch == self._first + 1 or rec.epoch % self.every == 0 or rec.epoch >= self._expected:
            self._print(rec, info)
        else:
            self._pending = (rec, info)

    def _where(self, epoch: int) -> str:
        if self._expected >= self.total:
            return f"epoch {epoch}/{self.total}"
        return f"epoch {epoch}/~{self._expected} (max {self.total})"

    def _eta(self, epoch: int) -> float:
        elapsed = time.perf_counter() - (self._t_first or self._t0)
        return elapsed / max(1, epoch - (self._first or 0)) * max(0, self._expected - epoch)

    def _print(self, rec: Any, info: str) -> None:
        elapsed = time.perf_counter() - self._t0
        print(f"[{self.label}] {self._where(rec.epoch)} {info}  elapsed {elapsed:.0f}s  "
              f"eta ~{self._eta(rec.epoch):.0f}s", file=self.stream, flush=True)
        self._pending = None

    # -- stages after training ------------------------------------------------------------------
    def stage(self, text: str) -> None:
        """A stage began (refit, calibration, backtest, outputs, report): shown at once, with its time."""
        self._end_stage()
        if self._pending is not None:
            self._print(*self._pending)
        self._stage = (text, time.perf_counter())
        if self._bar is not None:
            self._bar.update(self._task, where=text, info="", eta="")  # the spinner and the clock keep moving
            return
        print(f"[{self.label}] {text} ...  elapsed {time.perf_counter() - self._t0:.0f}s", file=self.stream,
              flush=True)

    def _end_stage(self) -> None:
        if self._stage is None:
            return
        text, t0 = self._stage
        self._stage = None
        if self._bar is None:
            print(f"[{self.label}] {text}: done in {time.perf_counter() - t0:.1f}s", file=self.stream, flush=True)


def trials_eta(elapsed: float, ran: int, left: int, deadline: float | None) -> float | None:
    """Seconds until the study ends: this worker's mean trial time x the trials left, but no later than the
    timeout (no trial starts after it; the one running then still finishes). None before the first trial."""
    if ran <= 0:
        return None
    eta = elapsed / ran * max(0, left)
    if deadline is not None:
        eta = min(eta, max(0.0, deadline - time.monotonic()) + elapsed / ran)
    return eta
