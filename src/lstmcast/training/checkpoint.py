"""Training checkpoints that survive kill -9, full disks and tampering. safetensors + JSON only.

RUN/checkpoints/step-000000120/ holds ``state.safetensors`` (weights, best weights, optimizer /
scheduler / GradScaler tensors, the epoch's running sums), ``state.json`` (everything else: step,
epoch, position in the epoch, RNG states, early-stopping state, history, config, data fingerprint,
format version) and ``manifest.json`` (format version and the sha256 of both files). A checkpoint
is written into a hidden temp folder (each file atomically: temp file, fsync, rename) and then
renamed into place, so a crash leaves either the old set of checkpoints or the new one, never half
a checkpoint. The newest ``keep`` (2) are kept.

>>> store = CheckpointStore("runs/demo")                      # doctest: +SKIP
>>> store.save({"w": torch.zeros(2)}, {"step": 5, "epoch": 1})  # doctest: +SKIP
>>> store.load_latest().step                                  # doctest: +SKIP
5
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lstmcast import atomic
from lstmcast.errors import CheckpointError, short
from lstmcast.run.manifest import (
    HEX64,
    MANIFEST,
    is_unsafe,
    read_verified,
    refuse_only_pickles,
    refuse_unsafe,
    sha256_bytes,
)
from lstmcast.training.state_schema import state_problems

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
TENSORS, STATE = "state.safetensors", "state.json"
_NAME = re.compile(r"step-(\d{9,})")


class VersionMismatch(CheckpointError):
    """A checkpoint or run folder from another format version (never silently skipped)."""


@dataclass
class Checkpoint:
    """One verified checkpoint: its folder, tensors (on CPU) and JSON state."""

    path: Path
    tensors: dict[str, Tensor]
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])


# -- encoding state dicts: tensors to safetensors, the rest to JSON ------------------------------
def encode(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Replace each tensor in a nested state dict by ``{"__tensor__": key}`` and collect it in ``tensors``."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__pairs__": [[k, encode(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def decode(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`encode`; a missing tensor raises CheckpointError."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            key = obj["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise CheckpointError(f"state.json refers to tensor {key!r} that state.safetensors lacks")
            return tensors[key]
        if set(obj) == {"__pairs__"}:
            return {k: decode(v, tensors) for k, v in obj["__pairs__"]}
        return {k: decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    return obj


def b64(t: Tensor) -> str:
    """A uint8 RNG state tensor as base64 text (RNG states live in the JSON)."""
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def unb64(text: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text.encode("ascii"), validate=True)), dtype=torch.uint8)


# -- reading and verifying one checkpoint folder ------------------------------------------------
_REQUIRED = {"format_version": int, "step": int, "epoch": int, "finished": bool, "config": dict,
             "fingerprint": dict, "history": list, "rng": dict, "optimizer": dict, "scheduler": dict,
             "early_stopping": dict, "guard": dict}


_KIND_WORDS = {int: "a non-negative integer", bool: "true or false", dict: "an object ({...})", list: "a list ([...])"}


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder}: {MANIFEST} is missing (the checkpoint was never completed)")
    manifest = atomic.parse_json(path.read_bytes(), str(path))
    version = manifest.get("format_version")
    if version != CHECKPOINT_FORMAT:
        raise VersionMismatch(f"{folder} was written in checkpoint format version {version!r}; this lstmcast "
                              f"reads version {CHECKPOINT_FORMAT}: resume with the lstmcast release that wrote "
                              "it, or start a new run")
    hashes = manifest.get("sha256")
    if not isinstance(hashes, dict) or not all(
            isinstance(hashes.get(n), str) and HEX64.fullmatch(hashes[n]) for n in (TENSORS, STATE)):
        raise CheckpointError(f"{path} is damaged: it must list a sha256 for {TENSORS} and {STATE}")
    return hashes


def _parse_tensors(data: bytes, path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        return st_load(data)
    except (SafetensorError, ValueError, TypeError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path} has no valid safetensors header ({exc})") from None


def _parse_state(data: bytes, path: Path) -> dict[str, Any]:
    meta = atomic.parse_json(data, str(path))
    for key, kind in _REQUIRED.items():
        value = meta.get(key)
        negative = isinstance(value, int) and value < 0
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or negative)):
            got = "missing" if key not in meta else f"{short(value, 40)}"
            raise CheckpointError(f"{path} is damaged: {key!r} is {got}, not {_KIND_WORDS[kind]}")
    if meta["format_version"] != CHECKPOINT_FORMAT:
        raise VersionMismatch(f"{path} has checkpoint format version {meta['format_version']}; this lstmcast "
                              f"reads version {CHECKPOINT_FORMAT}")
    problems = state_problems(meta)  # FAULTS T12: a re-hashed edit must be an exit 4, not a crash mid-training
    if problems:
        raise CheckpointError(f"{path} is damaged or was edited: " + "; ".join(problems))
    return meta


def _check_step_matches_name(meta: dict[str, Any], folder: Path) -> None:
    """R11: step-000000120 holds step 120. An edited, re-hashed step would resume elsewhere and set the good
    later checkpoints aside as "newer"; refused, so the newest good checkpoint is used instead."""
    m = _NAME.fullmatch(folder.name)
    if m and int(m.group(1)) != meta["step"]:
        raise CheckpointError(f"{folder / STATE} is damaged or was edited: its step {meta['step']} is not the "
                              f"{int(m.group(1))} its folder is named after")


def read_checkpoint(folder: str | os.PathLike[str]) -> Checkpoint:
    """Load and verify one checkpoint folder (hashes, safetensors header, JSON schema).

    Raises CheckpointError (VersionMismatch for another format version); never unpickles.
    """
    folder = Path(folder)
    refuse_unsafe(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} does not exist")
    try:
        hashes = _manifest(folder)
        tensors = _parse_tensors(read_verified(folder, TENSORS, hashes[TENSORS], "checkpoint"), folder / TENSORS)
        meta = _parse_state(read_verified(folder, STATE, hashes[STATE], "checkpoint"), folder / STATE)
        _check_step_matches_name(meta, folder)
    except OSError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"cannot read checkpoint {folder}: {exc.strerror or exc}") from None
    return Checkpoint(folder, tensors, meta)


# -- the store: write, rotate, find the newest good one -----------------------------------------
class CheckpointStore:
    """The checkpoints of one run folder (``RUN/checkpoints``), newest ``keep`` kept."""

    def __init__(self, run_dir: str | os.PathLike[str], keep: int = 2):
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / "checkpoints"
        self.keep = max(1, keep)

    def names(self) -> list[Path]:
        """Complete-looking checkpoint folders, newest first (temp and damaged ones ignored)."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NAME.fullmatch(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def check_writable(self) -> None:
        """Fail before training, not after an hour of it, when the run folder cannot take checkpoints.

        Also removes what a process killed mid-write left behind (hidden temp folders)."""
        probe = self.folder / ".write-probe"
        atomic.write_bytes(probe, b"ok")
        probe.unlink(missing_ok=True)
        for stale in self.folder.glob(".step-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def save(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
        """Write a checkpoint for ``meta['step']`` atomically; on failure the previous ones stay intact."""
        from safetensors.torch import save as st_save

        name = f"step-{int(meta['step']):09d}"
        final, tmp = self.folder / name, self.folder / f".{name}.tmp-{os.getpid()}"
        previous = self.names()
        try:
            blob = st_save(tensors, metadata={"format_version": str(CHECKPOINT_FORMAT)})
            text = json.dumps(meta, allow_nan=True).encode("utf-8")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            atomic.write_bytes(tmp / TENSORS, blob)
            atomic.write_bytes(tmp / STATE, text)
            atomic.write_json(tmp / MANIFEST, {"format_version": CHECKPOINT_FORMAT,
                                               "sha256": {TENSORS: sha256_bytes(blob), STATE: sha256_bytes(text)}})
            self._publish(tmp, final)
        except (OSError, ValueError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            kept = f"the previous checkpoint {previous[0]} is intact" if previous else "no earlier checkpoint exists"
            reason = exc if isinstance(exc, CheckpointError) else (getattr(exc, "strerror", None) or exc)
            raise CheckpointError(f"cannot write checkpoint {final}: {reason}; {kept}. Free disk space or make "
                                  f"{self.run_dir} writable, then continue with `lstmcast train --resume "
                                  f"{self.run_dir}`") from None
        self._prune()
        return final

    def _publish(self, tmp: Path, final: Path) -> None:
        old = None
        if final.exists():  # the same step again (after a resume from an older checkpoint): swap it out
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        atomic._fsync_dir(self.folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _prune(self) -> None:
        for stale in self.names()[self.keep:]:
            shutil.rmtree(stale, ignore_errors=True)

    def load_latest(self) -> Checkpoint:
        """The newest checkpoint that verifies; damaged newer ones are skipped with a warning."""
        self._refuse_pickles()
        candidates = self.names()
        if not candidates:
            raise CheckpointError(f"{self.run_dir} holds no checkpoint to resume from (no {self.folder.name}/"
                                  "step-* folder): pass the folder given to `lstmcast train --run`")
        problems = []
        for path in candidates:
            try:
                ckpt = read_checkpoint(path)
            except VersionMismatch:
                raise
            except CheckpointError as exc:
                problems.append(str(exc))
                log.warning("checkpoint %s is damaged (%s); trying the previous one", path.name, exc)
                continue
            if problems:
                log.warning("resuming from the previous good checkpoint %s", path.name)
            return ckpt
        raise CheckpointError(f"no usable checkpoint in {self.folder}: " + "; ".join(problems)
                              + ". Start a new run (the damaged files were left in place)")

    def _refuse_pickles(self) -> None:
        refuse_unsafe(self.run_dir)
        for folder in (self.run_dir, self.folder):
            if folder.is_dir():
                if not self.names():
                    refuse_only_pickles(folder, sorted(p.name for p in folder.rglob("*") if is_unsafe(p)),
                                        "checkpoints")

    def discard_newer_than(self, step: int) -> None:
        """Set checkpoints newer than ``step`` (the damaged ones a resume skipped) aside, kept for inspection."""
        for path in self.names():
            m = _NAME.fullmatch(path.name)
            if m and int(m.group(1)) > step:
                target = path.with_name(f"set-aside-{path.name}")
                shutil.rmtree(target, ignore_errors=True)
                os.replace(path, target)
                log.warning("checkpoint %s is newer than the one resumed from: set aside as %s", path.name,
                            target.name)

    def write_report(self, name: str, obj: Any) -> Path:
        path = self.run_dir / name
        atomic.write_json(path, obj)
        return path
