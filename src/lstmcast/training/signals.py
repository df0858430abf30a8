"""SIGINT / SIGTERM during training: finish the step, checkpoint, flush, stop (exit 130 in the CLI).

The handler only sets flags on the trainer; the loop looks at them between steps. A second
SIGINT while the first is being handled raises KeyboardInterrupt at once (the user insists).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(trainer: Any) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``trainer.stop_requested`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = signum
        trainer.stop_requested = True

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
