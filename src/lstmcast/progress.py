"""Progress for long work: a rich bar (ETA, loss, validation loss) on a terminal, plain periodic
lines otherwise (CI, files). Used as a training callback."""

from __future__ import annotations

import sys
import time
from typing import Any


class EpochProgress:
    """Context manager and ``(trainer, record)`` callback reporting each epoch.

    Non-TTY output prints one line per epoch at most every ``every_s`` seconds (and the last one).
    """

    def __init__(self, total_epochs: int, stream: Any = None, every_s: float = 5.0, label: str = "train"):
        self.total, self.stream, self.every_s, self.label = total_epochs, stream or sys.stderr, every_s, label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._t0 = time.perf_counter()

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

    def __call__(self, trainer: Any, rec: Any) -> None:
        info = f"loss {rec.train_loss:.4g}  val {rec.val_loss:.4g}  lr {rec.lr:.2g}"
        if rec.skipped_steps:
            info += f"  skipped {rec.skipped_steps}"
        if self._bar is not None:
            self._bar.update(self._task, completed=rec.epoch, info=info)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s or rec.epoch == 1 or rec.epoch >= self.total:
            elapsed = now - self._t0
            eta = elapsed / rec.epoch * (self.total - rec.epoch)
            print(f"[{self.label}] epoch {rec.epoch}/{self.total} {info}  elapsed {elapsed:.0f}s  "
                  f"eta <= {eta:.0f}s", file=self.stream, flush=True)
            self._last = now
