"""The lstmcast error hierarchy.

Every error a user can cause is one of these. Each also subclasses the matching built-in, so
``except ValueError`` in user code keeps working, and each carries the CLI exit code it maps to
(0 ok, 2 usage/config, 3 data, 4 checkpoint/artifact, 5 diverged, 130 interrupted).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

MAX_ECHO = 80  # characters of a user's value repeated in an error message
MAX_NAMES = 20  # names listed in an error message (columns present, candidates)


class LstmcastError(Exception):
    """Base class of every error lstmcast raises on purpose."""

    exit_code: int = 1


class ConfigError(LstmcastError, ValueError):
    """The configuration is invalid (unknown key, wrong type, out of range, inconsistent)."""

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            msg = self.problems[0]
        else:
            msg = f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


class ShapeError(LstmcastError, ValueError):
    """A tensor given to the model or the API has the wrong shape, dtype or device."""

    exit_code = 2


class DataError(LstmcastError, ValueError):
    """The input data breaks one of the data invariants (FAULTS.md D1-D13)."""

    exit_code = 3


class CheckpointError(LstmcastError, OSError):
    """A run folder or checkpoint is missing, corrupted, unsafe or from another format version."""

    exit_code = 4


class DivergedError(LstmcastError, RuntimeError):
    """Training produced non-finite losses or gradients too often to continue."""

    exit_code = 5


class NotFittedError(LstmcastError, AttributeError):
    """``predict``/``backtest``/``save`` was called before ``fit``."""

    exit_code = 2


class ResourceError(LstmcastError, MemoryError):
    """The device ran out of memory: the cure is a smaller batch, window, model or precision."""

    exit_code = 2


class InterruptedRun(LstmcastError):
    """Training stopped on SIGINT/SIGTERM after checkpointing."""

    exit_code = 130


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` if none is close.

    Case is ignored when matching (``sunactivity`` finds ``SUNACTIVITY``); the suggestion keeps the
    choice's own spelling, which is what the user must type.
    """
    options = [str(c) for c in choices]
    lowered = {c.lower(): c for c in reversed(options)}  # the first choice wins among case variants
    if str(word).lower() in lowered and lowered[str(word).lower()] != word:
        return f" (did you mean '{cut(lowered[str(word).lower()])}'?)"
    if len(str(word)) > 10 * MAX_ECHO:  # difflib is quadratic in the length: a huge word matches nothing
        return ""
    match = difflib.get_close_matches(str(word).lower(), [c for c in lowered if len(c) <= 10 * MAX_ECHO], n=1,
                                      cutoff=0.6)
    return f" (did you mean '{cut(lowered[match[0]])}'?)" if match else ""


def cut(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters: an error must not echo a megabyte back (FAULTS C5, R10)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short(value: Any, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters, without building the repr of a huge value first."""
    if isinstance(value, (list, tuple, dict)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, int) and value.bit_length() > 256:  # repr of a 5000-digit int raises ValueError
        return "<an integer of more than 77 digits>"
    if isinstance(value, str) and len(value) > 4 * limit:  # repr of a 5 MB cell would copy it first
        return cut(repr(value[:limit]), limit)
    return cut(repr(value), limit)


def short_path(path: Any, limit: int = 2 * MAX_ECHO) -> str:
    """``repr`` of a path cut in the middle, so the file name at its end stays visible."""
    text = repr(str(path))
    return text if len(text) <= limit else text[:limit // 3] + "..." + text[-(limit - limit // 3 - 3):]


def short_list(values: Iterable[Any], limit: int = MAX_NAMES) -> str:
    """The first ``limit`` values, each ``short``, comma-separated, then how many more there are."""
    items = list(values)
    shown = ", ".join(short(v) for v in items[:limit])
    return shown + (f" ... ({len(items) - limit} more)" if len(items) > limit else "")


def plain(value: object) -> str:
    """``repr`` of a value as the user wrote it, cut (``short``): numpy scalars lose their ``np.int64(...)`` wrapper."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        value = item()
    return short(value)
