"""Device choice, thread count, precision request and execution mode, resolved before any data is read.

``precision: auto`` resolves here to a provisional fp32; the measured choice is made once the model and
the data exist (``training.precision.settle``), and ``Accel.reason`` then says what was measured.
``accel`` chooses how the step runs: ``graphs`` (whole-step CUDA graphs, see ``training.graphs``) or
``eager``; ``auto`` means graphs on CUDA, eager elsewhere.

>>> a = resolve("cpu", "fp32", 1)
>>> a.device.type, a.precision, a.graphs
('cpu', 'fp32', False)
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from lstmcast.errors import ConfigError

log = logging.getLogger(__name__)

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
PENDING = "auto, pending the measured choice"


@dataclass(frozen=True)
class Accel:
    device: torch.device
    precision: str  # resolved: fp32 | tf32 | bf16 | fp16
    threads: int
    reason: str = ""
    requested: str = ""  # as asked for: auto | fp32 | tf32 | bf16 | fp16 ("" = same as precision)
    graphs: bool = False  # whole-step CUDA graphs wanted (training.graphs may still fall back to eager)
    graphs_reason: str = ""

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST.get(self.precision)

    @property
    def pending(self) -> bool:
        """True while ``precision: auto`` still waits for the measured choice."""
        return self.requested == "auto" and self.reason == PENDING


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_threads(n: int, key: str = "train.threads") -> int:
    """Refuse more threads than the machine has cores: 100000 OpenMP threads crash the process (FAULTS C5)."""
    cores = max(os.cpu_count() or 1, available_cores())
    if n > cores:
        raise ConfigError(f"{key}={n} but this machine has {cores} cores ({available_cores()} available to this "
                          f"process): set {key} to at most {cores}, or leave it unset to use the available cores")
    return n


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA GPU is visible to PyTorch: set train.device "
                          "to 'cpu' or 'auto', or check the driver (torch.cuda.is_available() is False)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_tf32(device: torch.device, on: bool) -> None:
    """TF32 matmuls and cuDNN convolutions/RNNs on NVIDIA GPUs (process-wide PyTorch flags)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def graphs_decision(mode: str, device: torch.device) -> tuple[bool, str]:
    """Whether whole-step CUDA graphs are wanted for ``train.accel`` on ``device``, and why."""
    if mode == "eager":
        return False, "train.accel is eager"
    if device.type != "cuda":
        return False, f"CUDA graphs need a CUDA device; {device.type} runs the same step eagerly"
    return True, f"train.accel is {mode}: the whole step is captured once per batch shape and replayed"


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The bf16 instruction sets this CPU reports (Linux /proc/cpuinfo; [] where unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return [f for f in CPU_BF16_FLAGS if f in flags]
    return []


@functools.lru_cache(maxsize=1)
def cpu_bf16_runs() -> bool:
    """Whether this CPU's oneDNN runs an LSTM under bf16 autocast (forward and backward); some CPUs refuse
    ("could not create a primitive descriptor for the LSTM forward propagation primitive")."""
    try:
        lstm = torch.nn.LSTM(2, 4, batch_first=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.zeros(1, 3, 2))
        out.float().sum().backward()
        return True
    except RuntimeError:
        return False


@contextmanager
def caller_threads() -> Iterator[None]:
    """Give the calling thread back its torch thread count after the block: ``resolve`` sets ``train.threads``
    (default: the cores available) for training, which must not outlive ``fit`` in the caller's process."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve(device: str, precision: str, threads: int | None, accel: str = "auto") -> Accel:
    """Resolve the device, the precision, the thread count and the step mode, refusing impossible combinations."""
    dev = resolve_device(device)
    n = check_threads(threads) if threads else available_cores()
    if dev.type == "cpu":
        torch.set_num_threads(n)
    if precision == "fp16" and dev.type == "cpu":
        raise ConfigError("train.precision fp16 is not supported on CPU: use bf16 or fp32 (or auto)")
    if precision == "tf32" and dev.type == "cpu":
        raise ConfigError("train.precision tf32 exists on NVIDIA GPUs only: use fp32 or bf16 on CPU (or auto)")
    if precision == "bf16" and dev.type == "cpu" and not cpu_bf16_runs():
        raise ConfigError("train.precision bf16: this CPU's oneDNN cannot run an LSTM in bf16 (no bf16 kernels for "
                          "it): use fp32 (or auto, which then stays fp32)")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision bf16 is not supported by this GPU: use fp16 or fp32 (or auto)")
    resolved, reason = precision, "asked for in the config"
    if precision == "auto":
        resolved, reason = "fp32", PENDING
    set_tf32(dev, resolved == "tf32")
    graphs, why = graphs_decision(accel, dev)
    if accel == "graphs" and not graphs:
        log.warning("train.accel is graphs but %s: falling back to eager", why)
    log.info("device %s, precision %s (%s), %d threads, %s step (%s)", dev, resolved, reason, n,
             "graphed" if graphs else "eager", why)
    return Accel(device=dev, precision=resolved, threads=n, reason=reason, requested=precision,
                 graphs=graphs, graphs_reason=why)
