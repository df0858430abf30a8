"""Which training windows an epoch visits, drawn from the batch-order generator (so a resumed epoch,
re-drawn from the generator state saved at its start, visits the same windows in the same order).

``draw(n, k, g)``: ``k`` distinct window positions out of ``n``, in random order. With many series
``n`` runs to tens of millions while an epoch (``train.windows_per_epoch``) wants a few hundred
thousand, so a full ``randperm(n)`` per epoch (8 bytes and a shuffle per window) is avoided there.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_PERM_FRACTION = 0.25  # above this share of n a permutation is cheaper than rejecting duplicates


def draw(n: int, k: int, generator: torch.Generator) -> Tensor:
    """``min(k, n)`` distinct positions in [0, n), uniformly random as a set and in random order."""
    dev = generator.device
    k = min(k, n)
    if k >= _PERM_FRACTION * n:
        return torch.randperm(n, generator=generator, device=dev)[:k]
    m = k + k // 4 + 16
    while True:
        picks = _first_distinct(torch.randint(n, (m,), generator=generator, device=dev))
        if len(picks) >= k:
            return picks[:k]
        m *= 2  # rare: many repeats; a fresh draw (the result stays uniform by symmetry of the labels)


def _first_distinct(c: Tensor) -> Tensor:
    """The distinct values of ``c`` in the order they first occur (the first k of an i.i.d. sequence are a
    uniform random k-subset in uniform random order)."""
    uniq, inv = torch.unique(c, return_inverse=True)
    pos = torch.arange(len(c), device=c.device)
    first = torch.full((len(uniq),), len(c), dtype=pos.dtype, device=c.device).scatter_reduce_(
        0, inv, pos, reduce="amin")
    return c[first.sort().values]


def validation_sample(val: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """``train.val_windows``: the validation windows as they are when at most ``cap``, else a sorted uniform
    sample of ``cap`` of them from ``seed`` (its own generator: the training RNG draws are the same either way,
    and every distributed rank draws the same sample)."""
    if cap is None or len(val) <= cap:
        return val
    pick = np.random.default_rng([seed, 0x5A1]).choice(len(val), size=cap, replace=False)
    return val[np.sort(pick)]
