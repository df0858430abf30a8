"""Carried LSTM states (model.stateful, issue 24): one (h, c) per series id, and their files in the run folder.

RUN/state.json names the current RUN/state-<generation>.safetensors (tensors h, c: (S, layers * D, hidden);
out: (S, D * hidden), the top layer's last output; last_time, rows: (S,) int64) with its sha256, the sha256 of
the model.safetensors it belongs to, and every series' id and last time. An update writes the new
generation's safetensors first, then state.json (each atomically: temp, fsync, rename), then removes the old
generation: a kill -9 at any point leaves a state.json whose file is complete. Nothing read is trusted: the
hashes, shapes, dtypes, ids and times are checked, and a mismatch is a CheckpointError naming the file (exit 4).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lstmcast import atomic
from lstmcast.errors import CheckpointError, short

STATE_JSON = "state.json"
STATE_VERSION = 1
_GEN = re.compile(r"^state-(\d{1,12})\.safetensors$")


@dataclass
class CarriedStates:
    """Per-series states, row i for ``ids[i]``; float32 on the CPU (the store), int64 times (ns or steps)."""

    ids: list[str]
    h: Tensor  # (S, layers * D, hidden)
    c: Tensor  # (S, layers * D, hidden)
    out: Tensor  # (S, D * hidden): the top layer's output at each series' last step (the head's input)
    last_time: np.ndarray  # (S,) int64: ns since the epoch (UTC-naive) or integer steps
    rows: np.ndarray  # (S,) int64: observations the state has read
    mean: Tensor  # (S, C) float64: each series' scaling (training's, or a new series' from its first rows)
    std: Tensor  # (S, C) float64
    generation: int = 0
    # position()'s map, kept while ``ids`` is the same list of the same length (add() makes a new list)
    _pos: tuple[list[str], int, dict[str, int]] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def empty(cls, layers_d: int, hidden: int, width: int, channels: int) -> CarriedStates:
        z = torch.zeros(0, layers_d, hidden)
        m = torch.zeros(0, channels, dtype=torch.float64)
        return cls([], z, z.clone(), torch.zeros(0, width), np.zeros(0, np.int64), np.zeros(0, np.int64), m, m.clone())

    def position(self) -> dict[str, int]:
        """Each id's row (a map built once per set of ids: an update of one series of many reads it twice)."""
        pos = self._pos
        if pos is None or pos[0] is not self.ids or pos[1] != len(self.ids):
            pos = self._pos = (self.ids, len(self.ids), {s: i for i, s in enumerate(self.ids)})
        return pos[2]

    def add(self, ids: list[str], mean: np.ndarray, std: np.ndarray) -> None:
        """New series: zero states (as the model's first step reads them), no time yet, their scaling."""
        n = len(ids)
        self.mean = torch.cat([self.mean, torch.as_tensor(mean, dtype=torch.float64).reshape(n, -1)])
        self.std = torch.cat([self.std, torch.as_tensor(std, dtype=torch.float64).reshape(n, -1)])
        self.ids = self.ids + list(ids)
        self.h = torch.cat([self.h, self.h.new_zeros(n, *self.h.shape[1:])])
        self.c = torch.cat([self.c, self.c.new_zeros(n, *self.c.shape[1:])])
        self.out = torch.cat([self.out, self.out.new_zeros(n, self.out.shape[1])])
        self.last_time = np.concatenate([self.last_time, np.full(n, np.iinfo(np.int64).min, np.int64)])
        self.rows = np.concatenate([self.rows, np.zeros(n, np.int64)])

    def subset(self, ids: list[str]) -> CarriedStates:
        """The states of ``ids`` (each one this store holds), in that order; a copy."""
        pos = self.position()
        rows = torch.tensor([pos[s] for s in ids], dtype=torch.long)
        idx = rows.numpy()
        return CarriedStates(list(ids), self.h[rows].clone(), self.c[rows].clone(), self.out[rows].clone(),
                             self.last_time[idx].copy(), self.rows[idx].copy(), self.mean[rows].clone(),
                             self.std[rows].clone(), self.generation)

    def copy(self) -> CarriedStates:
        return CarriedStates(list(self.ids), self.h.clone(), self.c.clone(), self.out.clone(),
                             self.last_time.copy(), self.rows.copy(), self.mean.clone(), self.std.clone(),
                             self.generation)

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.h, self.c, self.out)) + 16 * len(self.ids)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_states(folder: str | Path, states: CarriedStates, model_sha256: str, time_kind: str) -> Path:
    """The next generation on disk (safetensors first, then state.json, then the old file removed)."""
    from safetensors.torch import save as st_save

    folder = Path(folder)
    gen = states.generation + 1
    name = f"state-{gen:06d}.safetensors"
    blob = st_save({"h": states.h.contiguous(), "c": states.c.contiguous(), "out": states.out.contiguous(),
                    "last_time": torch.from_numpy(states.last_time.copy()),
                    "rows": torch.from_numpy(states.rows.copy()), "mean": states.mean.contiguous(),
                    "std": states.std.contiguous()}, metadata={"format_version": str(STATE_VERSION)})
    atomic.write_bytes(folder / name, blob)
    record = {"format_version": STATE_VERSION, "file": name, "sha256": _sha(blob), "model_sha256": model_sha256,
              "time_kind": time_kind, "series": len(states.ids), "shape": list(states.h.shape[1:]),
              "ids": states.ids, "last_time": [int(t) for t in states.last_time]}
    atomic.write_json(folder / STATE_JSON, record)
    for old in folder.glob("state-*.safetensors"):  # earlier generations (and a kill -9's orphan) go
        if old.name != name and _GEN.match(old.name):
            old.unlink(missing_ok=True)
    states.generation = gen
    return folder / name


def load_states(folder: str | Path, model_sha256: str, layers_d: int, hidden: int, width: int, channels: int,
                time_kind: str) -> CarriedStates | None:
    """The run's carried states, checked (CheckpointError naming the file); None when the run has none."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    folder = Path(folder)
    jpath = folder / STATE_JSON
    if not jpath.exists():
        return None
    rec = atomic.parse_json(jpath.read_bytes(), str(jpath), dict)

    def bad(path: Path, what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}: the carried states cannot be trusted; remove {STATE_JSON} and "
                               f"the state-*.safetensors files and run `lstmcast update` over the history again")
    name = rec.get("file")
    if rec.get("format_version") != STATE_VERSION or not isinstance(name, str) or not _GEN.match(name):
        raise bad(jpath, f"format_version or file entry is not one lstmcast writes ({short(str(name))})")
    if rec.get("model_sha256") != model_sha256:
        raise bad(jpath, "it belongs to another model.safetensors (the model was retrained or replaced)")
    if rec.get("time_kind") != time_kind:
        raise bad(jpath, f"its times are {short(str(rec.get('time_kind')))}, the model's {time_kind}")
    spath = folder / name
    if not spath.is_file() or spath.is_symlink():
        raise bad(spath, "missing or not a regular file")
    blob = spath.read_bytes()
    if _sha(blob) != rec.get("sha256"):
        raise bad(spath, "its sha256 differs from the one state.json recorded (changed or damaged)")
    try:
        t = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise bad(spath, f"not a valid safetensors file ({short(str(exc))})") from None
    ids = rec.get("ids")
    if not isinstance(ids, list) or not all(isinstance(s, str) for s in ids) or len(set(ids)) != len(ids):
        raise bad(jpath, "ids must be distinct strings")
    S = len(ids)
    want = {"h": ((S, layers_d, hidden), torch.float32), "c": ((S, layers_d, hidden), torch.float32),
            "out": ((S, width), torch.float32), "last_time": ((S,), torch.int64), "rows": ((S,), torch.int64),
            "mean": ((S, channels), torch.float64), "std": ((S, channels), torch.float64)}
    if sorted(t) != sorted(want):
        raise bad(spath, f"tensors {sorted(t)}, expected {sorted(want)}")
    for key, (shape, dtype) in want.items():
        if tuple(t[key].shape) != shape or t[key].dtype != dtype:
            raise bad(spath, f"{key} is {tuple(t[key].shape)} {t[key].dtype}, expected {shape} {dtype}")
    for key in ("h", "c", "out", "mean", "std"):
        if not torch.isfinite(t[key]).all():
            raise bad(spath, f"{key} holds non-finite values")
    last = t["last_time"].numpy().copy()
    if rec.get("last_time") != [int(v) for v in last]:
        raise bad(jpath, "its last times differ from the state file's")
    gen = int(_GEN.match(name).group(1))  # type: ignore[union-attr]  # matched above, or refused
    if not bool((t["std"] > 0).all()):
        raise bad(spath, "std holds values <= 0")
    return CarriedStates(ids, t["h"], t["c"], t["out"], last, t["rows"].numpy().copy(), t["mean"], t["std"], gen)


def state_description(layers: int, directions: int, hidden: int, series: int) -> dict[str, Any]:
    """The doctor's lines: shapes per layer and direction and the memory of S series' (h, c)."""
    floats = series * layers * directions * hidden * 2
    return {"h_c_per_layer_and_direction": [hidden], "state_shape": [layers * directions, "S", hidden],
            "floats": floats, "bytes_fp32": floats * 4}
