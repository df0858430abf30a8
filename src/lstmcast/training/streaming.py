"""Where the series lives during training, and how batches reach the device.

Normally the scaled series is ONE tensor resident on the training device and a batch is gathered from
its window view by an index tensor (``data.windows.gather``). When the series would not fit in device
memory, it stays in host memory and each batch streams: gathered on the host into a pinned staging
buffer, copied to the device with ``non_blocking=True`` so the copy overlaps the previous step's device
work (the guide's ``pin_memory`` tip, applied where it pays; docs/PERFORMANCE.md: it does not pay when the data fits).
Two staging buffers alternate; a buffer is refilled only after its previous copy has finished (an event
wait on that copy alone, never a device-wide sync).

>>> import torch
>>> should_stream(nbytes=10 * 2**30, free_bytes=8 * 2**30)
True
>>> w = torch.arange(20.0).view(10, 2).unfold(0, 4, 1)   # 10 rows, C=2, L+H=4
>>> x, y, *_ = make_gather(w, torch.device("cpu"), Roles(window=3, horizon=1, n_targets=1))(torch.tensor([0, 5]))
>>> tuple(x.shape), tuple(y.shape)
((2, 3, 2), (2, 1, 1))
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

from lstmcast.data.windows import Batch, Roles, Statics, gather, split_window

log = logging.getLogger(__name__)

DEVICE_FRACTION = 0.5  # the series may take at most this share of the free device memory
Gather = Callable[[Tensor], "Batch"]


def should_stream(nbytes: int, free_bytes: int, fraction: float = DEVICE_FRACTION) -> bool:
    """True when a series of ``nbytes`` would leave too little device memory for the model and batches."""
    return nbytes > fraction * free_bytes


def place_series(series: Tensor, device: torch.device) -> Tensor:
    """The series on ``device``, or left in host memory (to stream) when it does not fit there."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if should_stream(series.nbytes, free):
            log.info("the series takes %.2f GiB, over %.0f%% of the %.2f GiB free on %s: batches stream from "
                     "pinned host memory", series.nbytes / 2**30, DEVICE_FRACTION * 100, free / 2**30, device)
            return series.cpu()
    return series.to(device)


def make_gather(windows: Tensor, device: torch.device, roles: Roles, statics: Statics | None = None) -> Gather:
    """``idx -> Batch`` on ``device``: resident gather, or streaming when the windows are elsewhere."""
    if windows.device == device:
        return functools.partial(gather, windows, roles=roles, statics=statics)
    return HostBatcher(windows, device, roles, statics)


class HostBatcher:
    """Gathers batches from host-resident windows into pinned staging buffers, copies them non_blocking."""

    def __init__(self, windows: Tensor, device: torch.device, roles: Roles, statics: Statics | None = None,
                 slots: int = 2):
        self.windows, self.device, self.roles, self.statics = windows, device, roles, statics
        self.pin = device.type == "cuda" and torch.cuda.is_available()
        self.slots: list[Tensor | None] = [None] * slots
        self.events: list[torch.cuda.Event | None] = [None] * slots
        self.turn = 0
        self.copies = 0

    def _staging(self, slot: int, rows: int) -> Tensor:
        buf = self.slots[slot]
        if buf is None or buf.shape[0] < rows:
            shape = (rows, *self.windows.shape[1:])
            buf = torch.empty(shape, dtype=self.windows.dtype, pin_memory=self.pin)
            self.slots[slot] = buf
        return buf[:rows]

    def __call__(self, idx: Tensor) -> Batch:
        slot = self.turn
        self.turn = (self.turn + 1) % len(self.slots)
        event = self.events[slot]
        if event is not None:
            event.synchronize()  # the copy that last read this buffer has finished
        buf = self._staging(slot, int(idx.shape[0]))
        torch.index_select(self.windows, 0, idx.cpu(), out=buf)  # (B, C, L + H) on the host
        batch = buf.to(self.device, non_blocking=self.pin, copy=True)
        if self.pin:
            ev = torch.cuda.Event()
            ev.record()
            self.events[slot] = ev
        self.copies += 1
        return split_window(batch, self.roles, self.statics, idx.to(self.device) if self.statics else None)
