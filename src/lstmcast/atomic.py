"""Atomic file writes (temp file in the same folder, fsync, os.replace: nothing half-written stays), and
the one checked JSON read every loader of lstmcast's own files uses."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lstmcast.errors import CheckpointError, ConfigError


def write_bytes(path: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or byte chunks streamed in order) to ``path`` atomically; on any failure the
    previous file stays intact.

    Only a regular file is ever replaced (T11): a symlink, directory, device or FIFO at ``path`` is refused
    (ConfigError, exit 2), also when it appears between the check and the rename. An existing file keeps
    its mode (and, for root, its owner); a new file gets 0666 less the umask, like ``open()`` gives."""
    target = Path(path)
    tmp_name = None
    _refuse_folder_name(path)
    try:
        before = check_target(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(before.st_mode) if before is not None else 0o666 & ~_umask()
        tmp_name = _write_temp(target, data, mode, before)
        _commit(tmp_name, target, before)
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


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def check_target(path: str | os.PathLike[str]) -> os.stat_result | None:
    """``os.lstat`` of an output path: None when nothing is there, its stat when it is a regular file;
    anything else (lstmcast would replace it by a file) is a ConfigError naming what it is. A path that ends
    in '/' names a folder (R14: pathlib drops the slash, and a file of that name was written)."""
    _refuse_folder_name(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(st.st_mode):
        return st
    raise ConfigError(f"refusing to write {path}: it is {_kind(st)}, and lstmcast only ever replaces regular files "
                      "(writing would replace it by a file, not write into it): give the path of a regular file"
                      + (" inside it" if stat.S_ISDIR(st.st_mode) else ""))


def _refuse_folder_name(path: str | os.PathLike[str]) -> None:
    text = os.fspath(path)
    if isinstance(text, str) and text.endswith(("/", os.sep)):
        raise ConfigError(f"refusing to write {text}: it ends in '/', so it names a folder, not a file: give the "
                          "path of a file inside it")


def _kind(st: os.stat_result) -> str:
    if stat.S_ISREG(st.st_mode):
        return "another regular file"
    return next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")


def _umask() -> int:
    try:  # Linux >= 4.7 shows it without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _write_temp(target: Path, data: bytes | Iterable[bytes], mode: int, before: os.stat_result | None) -> str:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
                fh.write(part)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if before is not None and os.geteuid() == 0:  # root replacing a user's file: it stays theirs
                with contextlib.suppress(OSError):
                    os.fchown(fh.fileno(), before.st_uid, before.st_gid)
            os.fsync(fh.fileno())
    except BaseException:  # ENOSPC, EIO, a signal, a failing chunk: the half-written temp file goes too (R12)
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return tmp_name


def _commit(tmp_name: str, target: Path, before: os.stat_result | None) -> None:
    """Rename the temp file over ``target`` only if ``target`` is still nothing or a regular file.

    Where the kernel can (renameat2), the swap itself is atomic: RENAME_NOREPLACE when nothing was there,
    RENAME_EXCHANGE then a look at what came out (swapped back if it is not a regular file); elsewhere a
    second lstat just before os.replace narrows the window to microseconds. A regular file that another
    writer put there meanwhile (two tuning workers writing trials.csv) is replaced: the last writer wins."""
    if before is None:
        if _renameat2(tmp_name, target, _RENAME_NOREPLACE):
            return
        before = check_target(target)  # something appeared: refused unless it is a regular file
        if before is None:  # nothing there and no renameat2
            os.replace(tmp_name, target)
            return
    if _renameat2(tmp_name, target, _RENAME_EXCHANGE):
        out = os.lstat(tmp_name)  # what was at target a moment ago
        if not stat.S_ISREG(out.st_mode):
            _renameat2(tmp_name, target, _RENAME_EXCHANGE)  # put it back untouched
            raise ConfigError(f"refusing to write {target}: it was replaced by {_kind(out)} while lstmcast was "
                              "writing; lstmcast only ever replaces regular files: rerun with a regular file")
        os.unlink(tmp_name)  # the old file, swapped out
        return
    check_target(target)  # refused unless nothing or a regular file is there now
    os.replace(tmp_name, target)


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
_LIBC: list[Any] = []


def _renameat2(src: str | Path, dst: str | Path, flags: int) -> bool:
    """True when renameat2 did it; False where the kernel, libc or file system lacks it (the caller falls back).
    EEXIST and other real failures raise OSError."""
    if not _LIBC:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _LIBC.append(libc.renameat2 if hasattr(libc, "renameat2") else None)
        except OSError:
            _LIBC.append(None)
    fn = _LIBC[0]
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    if err == errno.EEXIST:
        return False  # NOREPLACE found something: the caller looks at what
    raise OSError(err, os.strerror(err), str(dst))


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
