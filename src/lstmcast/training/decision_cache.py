"""A per-machine memory of ``precision: auto`` verdicts, so the same config trains the same way.

The probe decides by timing, and timings move with the machine's load: without a memory, two runs with
the same seed could train in different precisions and give different loss curves. The first verdict
for a (machine, torch, model, settings, data) key is kept in ``$LSTMCAST_CACHE_DIR/precision.json``
(default ``$XDG_CACHE_HOME/lstmcast`` or ``~/.cache/lstmcast``) and reused; ``LSTMCAST_CACHE_DIR=off``
turns the memory off (every run probes). Delete the file to measure again. The cache is a convenience:
an unreadable or unwritable file only logs a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from lstmcast import atomic
from lstmcast.errors import LstmcastError

log = logging.getLogger(__name__)
FILE = "precision.json"


def folder() -> Path | None:
    configured = os.environ.get("LSTMCAST_CACHE_DIR")
    if configured is not None:
        return None if configured.strip().lower() in ("off", "0", "") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstmcast"


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    import torch

    return f"{platform.node()}|{model}|torch {torch.__version__}"


def digest(key: tuple) -> str:
    return hashlib.sha256(f"{_machine()}|{key!r}".encode()).hexdigest()


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the precision cache %s (%s); delete it to silence this", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def read(key: tuple) -> tuple[str, str] | None:
    where = folder()
    if where is None:
        return None
    entry = _load(where / FILE).get(digest(key))
    if not isinstance(entry, dict) or not isinstance(entry.get("precision"), str):
        return None
    return entry["precision"], str(entry.get("reason", ""))


def write(key: tuple, precision: str, reason: str) -> None:
    where = folder()
    if where is None:
        return
    path = where / FILE
    data = _load(path)
    data[digest(key)] = {"precision": precision, "reason": reason,
                         "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        atomic.write_json(path, data)
    except LstmcastError as exc:
        log.warning("could not remember the precision verdict in %s (%s); the next run will probe again", path, exc)
