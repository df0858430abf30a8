"""Atomic file writes (temp file in the same folder, fsync, os.replace: nothing half-written stays), and
the one checked JSON read every loader of lstmcast's own files uses."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; on any failure the previous file stays intact."""
    target = Path(path)
    tmp_name = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
        tmp_name = None
        _fsync_dir(target.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write {target}: {exc.strerror or exc}; the previous version (if any) is "
                              "intact. Check free disk space and that the folder is writable") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def parse_json(data: bytes, where: str, kind: type = dict, hint: str = "") -> Any:
    """JSON bytes of a file lstmcast wrote; a damaged file is a CheckpointError naming ``where``, never a crash."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{where} is not valid JSON ({exc}){hint}") from None
    if not isinstance(value, kind):
        raise CheckpointError(f"{where} is damaged: expected a JSON {_JSON_NAMES.get(kind, kind.__name__)}, "
                              f"got {type(value).__name__}")
    return value


_JSON_NAMES = {dict: "object", list: "array"}
