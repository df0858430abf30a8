"""What the run folder and the training checkpoints share on disk: sha256 hashes, the pickle refusal and the
verified read of a file a manifest.json lists.

Both are safetensors + JSON only, each with a manifest.json holding the sha256 of its files. lstmcast never
unpickles: a file or folder whose suffix names a pickle format is refused with the reason, never opened.

>>> sha256_bytes(b"")[:12]
'e3b0c44298fc'
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from lstmcast.errors import CheckpointError, cut, short_list

MANIFEST = "manifest.json"
HEX64 = re.compile(r"[0-9a-f]{64}")  # a sha256 as a manifest writes it
# the suffixes of pickle-based formats (torch.save, pickle, Lightning, joblib, PyTorch's pytorch_model.bin)
UNSAFE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib")
PICKLE_REASON = ("lstmcast never unpickles: loading a pickle (torch.load, .pt/.pkl) can run arbitrary code "
                 "hidden in the file. It loads only the safetensors + JSON files that it wrote itself")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike[str] | None) -> str | None:
    """sha256 of a regular file's bytes, read in 1 MB blocks (None without one): what identifies a data file
    across machines (run folders, tuning studies, evaluations, Spark outputs)."""
    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_unsafe(path: Path) -> bool:
    """``path``'s suffix names a pickle-based format."""
    return path.suffix.lower() in UNSAFE_SUFFIXES


def refuse_unsafe(path: Path) -> None:
    """Raise CheckpointError for a pickle-based file (or a folder named like one), explaining why it is never
    loaded."""
    if is_unsafe(path):
        raise CheckpointError(f"{path} is a pickle-based file ({path.suffix}): {PICKLE_REASON}. Pass the run "
                              "folder that `lstmcast train` wrote")


def refuse_only_pickles(folder: Path, unsafe: list[str], kind: str) -> None:
    """A folder where lstmcast's own files are missing but pickle-based ``kind`` ("files", "checkpoints") are
    present: refused with the reason, so the user learns why, not only that something is missing."""
    if unsafe:
        raise CheckpointError(f"{folder} holds only pickle-based {kind} [{short_list(unsafe, 5)}]: {PICKLE_REASON}")


def read_verified(folder: Path, name: str, want: str | None, what: str, remedy: str = "") -> bytes:
    """The bytes of ``folder/name``, checked against ``want`` (its sha256 in manifest.json; None: not listed).

    The file is opened only when it is a regular file (a FIFO would block, /dev/zero never ends); otherwise,
    or on a hash mismatch, CheckpointError naming ``what`` (the run folder, the checkpoint) and ``remedy``."""
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a complete {what}: {name} {not_a_file(path)}{remedy}")
    data = path.read_bytes()
    if want is not None and sha256_bytes(data) != want:
        raise CheckpointError(f"{path} is truncated or corrupted, or was changed after saving (its sha256 differs "
                              f"from {MANIFEST}){remedy}")
    return data


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_a_file(p: Path) -> str:
    """What stands at ``p`` instead of a regular file, in words ("is missing", "is a FIFO (named pipe)", "is a
    symbolic link to a character device (/dev/zero)")."""
    try:
        target = os.stat(p)
    except FileNotFoundError:
        return f"is a symbolic link to {cut(os.readlink(p), 100)!r}, which does not exist" if p.is_symlink() \
            else "is missing"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    kind = next((name for test, name in _KINDS if test(target.st_mode)), "not a regular file")
    if p.is_symlink():
        return f"is a symbolic link to {kind} ({cut(os.readlink(p), 100)}), not a regular file"
    return f"is {kind}, not a regular file"
