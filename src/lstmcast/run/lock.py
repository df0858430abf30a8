"""One writer per run folder (FAULTS T9): an OS file lock on RUN/.lock for the whole command.

``train`` (and ``train --resume``) hold it exclusively; ``tune`` workers hold it shared, so many workers
share one study folder while a ``train`` into that folder (or a ``tune`` into a training run) is refused.
The kernel drops a ``flock`` when its process ends in any way (exit, exception, SIGKILL), so a lock is
never stale. The file holds the holder's pid, host, command and start time, which the refusal names; the
last holder removes it on release (R12: a finished run keeps no ``.lock``), and a process that locked a
file removed meanwhile sees that the path no longer names its file and locks the new one. Re-entrant
within one process (the CLI locks before reading checkpoints, the library locks again in ``train_run``).

>>> with RunLock("runs/a"):  # doctest: +SKIP
...     ...  # a second process asking for runs/a now gets ConfigError (exit 2) naming this one
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lstmcast.errors import CheckpointError, ConfigError

LOCK_NAME = ".lock"
_HELD: dict[str, list[Any]] = {}  # resolved folder -> [fd, count, created]; flock is per open file, not per process
_GUARD = threading.Lock()


def holder_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:500],
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def describe_holder(path: Path) -> str:
    """The holder written in the lock file, in words (it may be mid-rewrite: then 'unknown')."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on host {info['host']}, started {info['started']}, "
                f"command: {info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


class RunLock:
    """Hold ``folder/.lock`` (created with the folder when missing) while the block runs."""

    def __init__(self, folder: str | os.PathLike[str], shared: bool = False, what: str = "run"):
        self.folder, self.shared, self.what = Path(folder), shared, what
        self._key: str | None = None

    def acquire(self) -> RunLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{self.folder} is a file, not a folder: choose another path")
        if self.folder.is_symlink() and not self.folder.exists():  # R14: mkdir said "File exists"
            raise ConfigError(f"{self.folder} is a symbolic link to {os.readlink(self.folder)!r}, which does not "
                              f"exist: create that folder, or choose another {self.what} folder")
        created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create {self.folder} ({exc.strerror or exc}): choose a writable "
                                  "place") from None
        key = str(self.folder.resolve())
        with _GUARD:
            held = _HELD.get(key)
            if held is not None:  # this process holds it already (CLI, then the library)
                held[1] += 1
                self._key = key
                return self
            fd = self._lock_file(self.folder / LOCK_NAME)
            self._write_holder(fd)
            _HELD[key] = [fd, 1, created]
            self._key = key
        return self

    def _lock_file(self, path: Path) -> int:
        """Open and flock ``path``; again when the holder that released it removed it meanwhile."""
        for _ in range(100):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise CheckpointError(f"cannot create the lock file {path} ({exc.strerror or exc}): make "
                                      f"{self.folder} writable, or choose another folder") from None
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(
                    f"{self.what} folder {self.folder} is in use by another lstmcast process ({describe_holder(path)})"
                    f": wait for it to finish, or choose another folder") from None
            except OSError as exc:  # a file system without flock: say so rather than run unprotected silently
                os.close(fd)
                raise ConfigError(f"cannot lock {path} ({exc.strerror or exc}): put the {self.what} folder on a "
                                  "local file system") from None
            if _same_file(fd, path):
                return fd
            os.close(fd)  # locked a file its last holder had just removed: lock the one the path names now
        raise ConfigError(f"cannot lock {path}: it is being created and removed without end: is another program "
                          "deleting it?")

    @staticmethod
    def _write_holder(fd: int) -> None:
        data = (json.dumps(holder_info()) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass  # the lock is what protects; the holder text only explains a refusal

    def release(self) -> None:
        if self._key is None:
            return
        with _GUARD:
            held = _HELD[self._key]
            held[1] -= 1
            if held[1] == 0:
                del _HELD[self._key]
                if held[2]:
                    self._remove_if_empty()  # a run refused before writing anything leaves no folder behind
                self._remove_if_last(held[0])
                os.close(held[0])  # drops the flock
        self._key = None

    def _remove_if_last(self, fd: int) -> None:
        """Remove the lock file unless another process holds it too (tune workers share it): holding it
        exclusively, nobody else can; a process that opened it meanwhile sees it gone (``_lock_file``)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # shared with another worker: the last one removes it
        path = self.folder / LOCK_NAME
        try:
            if _same_file(fd, path):
                path.unlink()
        except OSError:
            pass

    def _remove_if_empty(self) -> None:
        """Still holding the lock: no other process can be using a folder that holds only it."""
        try:
            if [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
                (self.folder / LOCK_NAME).unlink()
                self.folder.rmdir()
        except OSError:
            pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    """``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
