"""The linear skip's starting point: ridge regression of the horizon on the window, shrunk towards a baseline.

In the model's terms (model.py) the skip forecasts ``last + W (x - last)`` for each target's own window
``x`` (L values) and its last value. ``W = 0`` is the naive forecast; ``W = P_s`` (a selection of the
last season) the seasonal-naive one. Each candidate solves, on the training windows,

    min_W |D - Z W^T|^2 + lam |W - P|^2,   Z = X - last, D = Y - last   (n windows x L, n x H)

for a prior P (naive or seasonal naive) and a strength lam relative to the data's scale; the candidate
with the lowest validation loss wins (the priors themselves, lam = inf, included). So before the LSTM takes
a step the model already forecasts at least as well on validation as the better baseline, and the
Trainer's check at step 0 keeps that state unless training improves on it.

``robust`` (the default for a table of many series, training/fit.py): each fitted candidate minimises the
absolute error instead, ``sum |D - Z W^T| + lam |W - P|^2`` (least absolute deviations with the same ridge
pull, solved by iteratively reweighted least squares), and every candidate, the priors included, is scored on
validation by its mean absolute error. MASE, the panels' metric, is an absolute error: a few windows of a
growing series whose changes dwarf the rest's no longer set the pooled map. Measured on the panels benchmark
(README "Panels of short series").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)

RELATIVE_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
MAX_FIT_ROWS = 20_000  # windows used for the fit: the normal equations are L x L, the rows only cost the gather
ROBUST_STEPS = 6  # reweightings of the absolute-error fit, from the ridge solution (measured: enough to settle)
ROBUST_FLOOR = 0.1  # residuals below this share of their median weigh as much as one at it (no division by 0)
# multiply-adds of one reweighting (rows x L^2 x H, an L x L system per step ahead): above it the absolute fit reweights
# a random share of the rows (the panels benchmark's largest, 12k x 72^2 x 24 = 1.5e9, keeps all; at 20k x 144^2 x 48
# all rows took 10 s and 1.4 GB a candidate)
ROBUST_BUDGET = 2_000_000_000
Reduce = Callable[[Tensor], Tensor]  # data.shard_series: a sum over the ranks (each holds its own series)


@dataclass
class SkipFit:
    weight: Tensor  # (H, L)
    prior: str  # "naive" | "seasonal naive"
    lam: float  # relative strength; inf: the prior itself
    val_loss: float
    robust: bool = False  # fitted (and chosen) on the absolute error

    def as_dict(self) -> dict[str, object]:
        """The choice (not the weights): what a resumed run needs to refit the same way."""
        return {"prior": self.prior, "lam": None if math.isinf(self.lam) else self.lam, "val_loss": self.val_loss,
                "robust": self.robust}

    @classmethod
    def from_dict(cls, d: object) -> SkipFit | None:
        if not isinstance(d, dict) or d.get("prior") not in ("naive", "seasonal naive"):
            return None  # a checkpoint from before the choice was saved: the refit chooses on its own data
        lam = d.get("lam")
        lam = math.inf if lam is None else float(lam)
        return cls(weight=torch.zeros(0), prior=str(d["prior"]), lam=lam, val_loss=float(d.get("val_loss", math.nan)),
                   robust=bool(d.get("robust", False)))  # a checkpoint from before: least squares

    def describe(self) -> str:
        kind = "absolute-error ridge" if self.robust else "ridge"
        how = "the prior itself" if math.isinf(self.lam) else f"{kind}, strength {self.lam:g} x scale"
        what = "mean absolute error" if self.robust else "loss"
        return f"linear skip from the {self.prior} forecast ({how}), validation {what} {self.val_loss:.4g}"


def priors(window: int, horizon: int, season: int | None) -> dict[str, Tensor]:
    """Baseline forecasts as skip weights: naive (zeros) and, when a season fits the window, seasonal naive."""
    out = {"naive": torch.zeros(horizon, window)}
    if season and 1 < season <= window:
        p = torch.zeros(horizon, window)
        for h in range(horizon):
            p[h, window - season + h % season] = 1.0  # y[t+h] = x[t - season + 1 + h % season]
        out["seasonal naive"] = p
    return out


def _deltas(windows: Tensor, idx: Tensor, window: int, n_targets: int) -> tuple[Tensor, Tensor]:
    """Z (n*T, L) and D (n*T, H) in float64: each target's window and horizon minus its last value."""
    w = windows[idx, :n_targets].double()  # (n, T, L + H): the targets alone gathered, not every input channel
    last = w[:, :, window - 1:window]
    z, d = w[:, :, :window] - last, w[:, :, window:] - last
    return z.reshape(-1, window), d.reshape(-1, d.shape[-1])


LOSS_ROWS = 8192  # validation rows scored at a time: each candidate's error stays a few MB, not rows x H doubles


def _losses(z: Tensor, d: Tensor, weight: Tensor, kind: str, n_targets: int) -> Tensor:
    """Loss per validation window (averaged over its targets and steps), ``LOSS_ROWS`` rows at a time. Scoring
    every candidate over 65k validation windows at once made three (rows, H) temporaries per candidate; with the
    allocator keeping freed memory (train.allocator) they fragmented the heap and the 5M-point fit's resident size
    grew by 100-280 MB during the choice."""
    step = max(n_targets, LOSS_ROWS // n_targets * n_targets)  # whole windows per chunk
    return torch.cat([_chunk_losses(z[a:a + step], d[a:a + step], weight, kind, n_targets)
                      for a in range(0, len(z), step)]) if len(z) else z.new_zeros(0)


def _chunk_losses(z: Tensor, d: Tensor, weight: Tensor, kind: str, n_targets: int) -> Tensor:
    err = z @ weight.T - d
    if kind == "mae":
        per = err.abs()
    elif kind == "huber":
        a = err.abs()
        per = torch.where(a < 1, 0.5 * err ** 2, a - 0.5)
    else:
        per = err ** 2
    return per.mean(dim=1).reshape(-1, n_targets).mean(dim=1)


def _clearly_better(cand: Tensor, base: Tensor, horizon: int) -> bool:
    """A fitted map must beat the baseline by more than one standard error of the paired difference.

    Overlapping windows share H - 1 targets, so the effective number of independent windows is about
    n / H; without this rule a few noisy validation windows pick an overfitted map on short series."""
    diff = cand - base
    n_eff = max(1.0, len(diff) / horizon)
    se = float(diff.std()) / math.sqrt(n_eff) if len(diff) > 1 else math.inf
    return float(diff.mean()) < -se


def fit_skip(windows: Tensor, train_idx: Tensor, val_idx: Tensor, window: int, horizon: int, n_targets: int,
             season: int | None, loss: str = "mse", seed: int = 0, choice: SkipFit | None = None,
             reduce: Reduce | None = None, shares: int = 1, robust: bool = False) -> SkipFit:
    """Choose the skip weights (see the module docstring); ``windows`` is ``series.unfold(0, L + H, 1)``.

    ``choice``: refit with that prior and strength (and its ``robust``) on ``train_idx`` (train.refit: the
    validation windows are part of the training data then, so they cannot choose again). ``reduce`` (sharded
    ranks, ``shares`` of them): the normal equations and the validation sums are summed over the ranks, so all
    choose alike. ``robust``: the absolute-error fit and choice (module docstring)."""
    robust = choice.robust if choice is not None else robust
    if robust:
        loss = "mae"  # the candidates are scored on their absolute error
    gen = torch.Generator().manual_seed(seed)
    tr = train_idx.cpu()
    if len(tr) > MAX_FIT_ROWS // shares:
        tr = tr[torch.randperm(len(tr), generator=gen)[:MAX_FIT_ROWS // shares]]
    z, d = _deltas(windows.cpu(), tr, window, n_targets)
    zv, dv = _deltas(windows.cpu(), val_idx.cpu(), window, n_targets)
    gram, cross = z.T @ z, z.T @ d  # (L, L), (L, H)
    if reduce is not None:
        both = reduce(torch.cat([gram, cross], dim=1))
        gram, cross = both[:, :window].contiguous(), both[:, window:].contiguous()
    scale = float(torch.diagonal(gram).mean()) or 1.0
    eye = torch.eye(window, dtype=torch.float64)
    zr, dr = _robust_rows(z, d, gen, n_targets) if robust else (z, d)
    scored: list[tuple[SkipFit, Tensor]] = []
    for name, prior in priors(window, horizon, season).items():
        if choice is not None and name != choice.prior:
            continue
        p = prior.double()
        fixed = choice is not None and math.isfinite(choice.lam)
        candidates = [] if fixed else [(math.inf, p)]
        for lam in RELATIVE_LAMBDAS if choice is None else ([choice.lam] if fixed else []):
            # W = P + (Z'Z + lam I)^-1 Z'(D - Z P')
            delta = torch.linalg.solve(gram + lam * scale * eye, cross - gram @ p.T)
            weight = p + delta.T
            candidates.append((lam, _absolute_fit(zr, dr, p, weight, lam, reduce) if robust else weight))
        for lam, weight in candidates:
            if not torch.isfinite(weight).all():
                continue
            if choice is not None:
                return SkipFit(weight=weight.float(), prior=name, lam=lam, val_loss=math.nan, robust=robust)
            per = _losses(zv, dv, weight, loss, n_targets)
            scored.append((SkipFit(weight=weight.float(), prior=name, lam=lam, val_loss=float(per.mean()),
                                   robust=robust), per))
    best = _choose(scored, horizon) if reduce is None else _choose_summed(scored, horizon, reduce)
    log.info("%s", best.describe())
    return best


def _robust_rows(z: Tensor, d: Tensor, gen: torch.Generator, n_targets: int) -> tuple[Tensor, Tensor]:
    """The rows the absolute fit reweights: all of them within ``ROBUST_BUDGET``, else a random share (whole
    windows: a window's ``n_targets`` rows stay together)."""
    n, L, H = z.shape[0], z.shape[1], d.shape[1]
    keep = max(1, ROBUST_BUDGET // (L * L * H)) // n_targets
    if n <= keep * n_targets:
        return z, d
    pick = torch.randperm(n // n_targets, generator=gen)[:keep]
    rows = (pick[:, None] * n_targets + torch.arange(n_targets)).reshape(-1)
    return z[rows], d[rows]


def _absolute_fit(z: Tensor, d: Tensor, p: Tensor, weight: Tensor, lam: float, reduce: Reduce | None) -> Tensor:
    """``min_W sum |D - Z W^T| + lam s_h |W_h - P_h|^2`` from the ridge solution ``weight`` (H, L), by
    iteratively reweighted least squares: each horizon step ``h`` its own weighted normal equations,
    ``(Z' diag(1/|r_h|) Z + lam s_h I) (W_h - P_h) = Z' diag(1/|r_h|) (D_h - Z P_h)``, ``s_h`` the weighted
    Gram's mean diagonal (the strength stays relative to the data's scale, as in the ridge fit)."""
    L, H = z.shape[1], d.shape[1]
    eye = torch.eye(L, dtype=z.dtype)
    target = d - z @ p.T  # (n, H): what the map adds to the prior
    for _ in range(ROBUST_STEPS):
        r = (z @ weight.T - d).abs()  # (n, H)
        w = 1.0 / r.clamp_min(max(float(r.median()) * ROBUST_FLOOR, 1e-12))
        gram = torch.stack([(z * w[:, h:h + 1]).T @ z for h in range(H)])  # (H, L, L), one (n, L) copy at a time
        cross = (w * target).T @ z  # (H, L)
        if reduce is not None:
            both = reduce(torch.cat([gram, cross.unsqueeze(2)], dim=2))
            gram, cross = both[:, :, :L].contiguous(), both[:, :, L].contiguous()
        scale = torch.diagonal(gram, dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)  # (H,)
        delta = torch.linalg.solve(gram + lam * scale[:, None, None] * eye, cross.unsqueeze(2)).squeeze(2)
        weight = p + delta  # (H, L)
    return weight


def _choose(scored: list[tuple[SkipFit, Tensor]], horizon: int) -> SkipFit:
    """The better baseline, unless a fitted map is clearly better on validation (``_clearly_better``)."""
    base, base_per = min(((f, p) for f, p in scored if math.isinf(f.lam)), key=lambda fp: fp[0].val_loss)
    fitted = [(f, p) for f, p in scored if not math.isinf(f.lam)]
    if not fitted:
        return base
    cand, cand_per = min(fitted, key=lambda fp: fp[0].val_loss)
    return cand if _clearly_better(cand_per, base_per, horizon) else base


def _choose_summed(scored: list[tuple[SkipFit, Tensor]], horizon: int, reduce: Reduce) -> SkipFit:
    """``_choose`` over every rank's validation windows: the candidates' loss sums and counts, then the paired
    differences' sum, sum of squares and count of the two finalists, each summed over the ranks."""
    sums = reduce(torch.tensor([[float(p.sum()), float(len(p))] for _, p in scored], dtype=torch.float64))
    for (f, _), (total, n) in zip(scored, sums.tolist()):
        f.val_loss = total / n if n else math.nan
    base_i = min((i for i, (f, _) in enumerate(scored) if math.isinf(f.lam)), key=lambda i: scored[i][0].val_loss)
    fitted = [i for i, (f, _) in enumerate(scored) if not math.isinf(f.lam)]
    if not fitted:
        return scored[base_i][0]
    cand_i = min(fitted, key=lambda i: scored[i][0].val_loss)
    diff = (scored[cand_i][1] - scored[base_i][1]).double()
    s1, s2, n = reduce(torch.tensor([float(diff.sum()), float((diff ** 2).sum()), float(len(diff))],
                                    dtype=torch.float64)).tolist()
    if n <= 1:
        return scored[base_i][0]
    std = math.sqrt(max(0.0, (s2 - s1 * s1 / n) / (n - 1)))  # torch.std's unbiased estimate, from the sums
    better = s1 / n < -std / math.sqrt(max(1.0, n / horizon))
    return scored[cand_i][0] if better else scored[base_i][0]
