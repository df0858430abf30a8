"""Device choice, thread count and precision policy, resolved before any data is read."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from ..errors import ConfigError

log = logging.getLogger(__name__)

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Accel:
    device: torch.device
    precision: str  # resolved: fp32 | tf32 | bf16 | fp16
    threads: int
    reason: str = ""

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST.get(self.precision)


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA GPU is visible to PyTorch: set train.device "
                          "to 'cpu' or 'auto', or check the driver (torch.cuda.is_available() is False)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve(device: str, precision: str, threads: int | None) -> Accel:
    """Resolve the device, the precision and the thread count, refusing impossible combinations."""
    dev = resolve_device(device)
    n = threads or available_cores()
    if dev.type == "cpu":
        torch.set_num_threads(n)
    if precision == "fp16" and dev.type == "cpu":
        raise ConfigError("train.precision fp16 is not supported on CPU: use bf16 or fp32 (or auto)")
    if precision == "tf32" and dev.type == "cpu":
        raise ConfigError("train.precision tf32 exists on NVIDIA GPUs only: use fp32 or bf16 on CPU (or auto)")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision bf16 is not supported by this GPU: use fp16 or fp32 (or auto)")
    resolved, reason = precision, "asked for in the config"
    if precision == "auto":
        resolved, reason = "fp32", "auto: fp32 (the measured policy is not enabled on this device)"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = resolved == "tf32"
        torch.backends.cudnn.allow_tf32 = resolved == "tf32"
    log.info("device %s, precision %s (%s), %d threads", dev, resolved, reason, n)
    return Accel(device=dev, precision=resolved, threads=n, reason=reason)
