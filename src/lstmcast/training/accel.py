"""Device choice, thread count, precision request and execution mode, resolved before any data is read.

``precision: auto`` resolves here to a provisional fp32; the measured choice is made once the model and
the data exist (``training.precision.settle``), and ``Accel.reason`` then says what was measured.
``accel`` chooses how the step runs: ``graphs`` (whole-step CUDA graphs, see ``training.graphs``) or
``eager``; ``auto`` means graphs on CUDA, eager elsewhere. ``keep_freed_memory`` is ``train.allocator``: glibc's
malloc otherwise hands every step's freed activations back to the system and takes them again as page faults.

>>> a = resolve("cpu", "fp32", 1)
>>> a.device.type, a.precision, a.graphs
('cpu', 'fp32', False)
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sys
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


# glibc's mallopt parameters (malloc.h) and the values train.allocator: auto sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit (half its 64 MiB arena heap)
TRIM_THRESHOLD = 128 * 2**20
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
               "GLIBC_TUNABLES")
_allocator_state: list[str] = []  # what keep_freed_memory did in this process (set once)


def keep_freed_memory(policy: str = "auto") -> str:
    """Keep freed training memory in the process instead of handing it back to the system (glibc).

    An LSTM step frees and re-allocates the same few-MiB activation buffers hundreds of times a second. glibc
    serves blocks above its mmap threshold (128 KiB, raised only as large blocks are freed) with fresh pages and
    trims its heap's free top back to the system, so every step page-faults its buffers in again: 0.3-1.3M
    minor faults in a 3-epoch fit at L=96 on two threads, the largest part of the variation between fits. With
    the mmap threshold at 32 MiB and the trim threshold at 128 MiB the buffers stay mapped and are reused.
    Process-wide and once (glibc cannot restore its adaptive threshold): the in-process counterpart of
    preloading jemalloc or tcmalloc (docs/PERFORMANCE.md, "The allocator"). ``system`` leaves malloc alone,
    and so does ``auto`` where it is not glibc or the user already chose (a ``MALLOC_*`` or
    ``GLIBC_TUNABLES`` variable, a preloaded allocator). Returns what was done, for the log.
    """
    if _allocator_state:
        return _allocator_state[0]
    if policy == "system":
        return "system malloc (train.allocator: system)"  # not remembered: a later fit may ask for auto
    why = _allocator_left_alone()
    if why is None:
        try:
            libc = ctypes.CDLL(None)  # the process's own symbols: the C library's mallopt
            ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
        except (OSError, AttributeError) as exc:  # a libc without mallopt
            ok, why = False, f"mallopt unavailable ({type(exc).__name__})"
        if ok:
            done = f"glibc malloc keeps freed memory (mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim " \
                   f"threshold {TRIM_THRESHOLD >> 20} MiB)"
        else:
            done = f"system malloc ({why or 'mallopt refused the thresholds'})"
    else:
        done = f"system malloc ({why})"
    log.info("allocator: %s", done)
    _allocator_state.append(done)
    return done


def _allocator_left_alone() -> str | None:
    """Why ``train.allocator: auto`` leaves malloc as it is here, or None to tune it."""
    if not sys.platform.startswith("linux"):
        return f"{sys.platform}: only glibc's malloc is tuned"
    name, _ = platform.libc_ver()
    if name != "glibc":
        return "not glibc"
    chosen = [k for k in _MALLOC_ENV if k in os.environ]
    if chosen:
        return f"{chosen[0]} is set in the environment"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(a in preload for a in ("jemalloc", "tcmalloc", "mimalloc")):
        return "an allocator is preloaded (LD_PRELOAD)"
    return None


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
