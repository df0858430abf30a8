"""SIGINT / SIGTERM during training: finish the step, checkpoint, flush, stop (exit 130 in the CLI).

The handler only records the request (``StopRequest``); the loop looks at it between steps. A second
SIGINT while the first is being handled raises KeyboardInterrupt at once (the user insists).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lstmcast.errors import InterruptedRun

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """A request to stop training between steps: from a signal (``signal`` is its number) or a caller."""

    requested: bool = False
    signal: int | None = None

    def request(self, signum: int | None = None) -> None:
        self.requested = True
        self.signal = signum if signum is not None else self.signal

    def reason(self) -> str:
        """The run's stop reason once stopped by this request."""
        return "interrupted" if self.signal is None else f"interrupted by {signal_name(self.signal)}"


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``stop`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.request(signum)

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


class _StopSignal(BaseException):
    """Raised by the handler of :func:`interrupt_on_signals`; a BaseException so no ``except Exception``
    (the report writer's, for one) swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def interrupt_on_signals(message: str) -> Iterator[None]:
    """SIGINT/SIGTERM stop the block at once with ``InterruptedRun("<SIGNAL>: message")`` (exit 130).

    For work that has no step to finish (writing a run's outputs): every write there is atomic, so
    stopping anywhere leaves whole files, and ``message`` says how to finish the rest."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _StopSignal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    except KeyboardInterrupt:
        raise InterruptedRun(f"SIGINT: {message}") from None
    except _StopSignal as stop:
        raise InterruptedRun(f"{signal_name(stop.signum)}: {message}") from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
