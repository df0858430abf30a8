"""Progress for long work: a rich bar (ETA, loss, validation loss) on a terminal, plain periodic
lines otherwise (CI, files). Used as a training callback."""

from __future__ import annotations

import sys
import time
from typing import Any


class EpochProgress:
    """Context manager and ``(trainer, record)`` callback reporting each epoch.

    Non-TTY output prints one line per epoch at most every ``every_s`` seconds, and always the first
    and the last epoch (also when early stopping ends the run before ``total_epochs``). "best" marks an
    epoch that improved the validation loss. On a resumed run the ETA counts only the epochs run here.
    """

    def __init__(self, total_epochs: int, stream: Any = None, every_s: float = 5.0, label: str = "train"):
        self.total, self.stream, self.every_s, self.label = total_epochs, stream or sys.stderr, every_s, label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._t0 = time.perf_counter()
        self._first: int | None = None  # epochs done before this process (resume)
        self._best = float("inf")
        self._pending: tuple[Any, str] | None = None  # the last epoch, when its line is not printed yet

    def __enter__(self) -> EpochProgress:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 TextColumn("epoch {task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=Console(file=self.stream), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif self._pending is not None:
            self._print(*self._pending)

    def __call__(self, trainer: Any, rec: Any) -> None:
        if self._first is None:
            self._first = rec.epoch - 1
        info = f"loss {rec.train_loss:.4g}  val {rec.val_loss:.4g}  lr {rec.lr:.2g}"
        if rec.val_loss < self._best:  # NaN (no validation split) never counts as best
            self._best = rec.val_loss
            info += "  best"
        if rec.skipped_steps:
            info += f"  skipped {rec.skipped_steps}"
        if self._bar is not None:
            self._bar.update(self._task, completed=rec.epoch, info=info)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s or rec.epoch == self._first + 1 or rec.epoch >= self.total:
            self._print(rec, info)
            self._last = now
        else:
            self._pending = (rec, info)

    def _print(self, rec: Any, info: str) -> None:
        elapsed = time.perf_counter() - self._t0
        eta = elapsed / max(1, rec.epoch - (self._first or 0)) * max(0, self.total - rec.epoch)
        print(f"[{self.label}] epoch {rec.epoch}/{self.total} {info}  elapsed {elapsed:.0f}s  "
              f"eta <= {eta:.0f}s", file=self.stream, flush=True)
        self._pending = None
