"""The measured precision policy behind ``train.precision: auto``.

Mixed precision is not a free win (docs/PERFORMANCE.md): on a GPU it slows small, launch-bound LSTM steps
and pays 2-3x only on wide or large-batch work; on a CPU with AVX512-BF16 or AMX-BF16, bf16 autocast
ran the bare loop 1.4x faster at equal test error on one machine and not at all on others. So ``auto``
measures instead of guessing:

1. candidates: fp32, plus bf16 on a CPU whose flags show AVX512-BF16 or AMX-BF16; fp32, tf32 and bf16
   (where supported) on a GPU. fp16 is never picked by ``auto``: it needs a GradScaler and the D10
   range checks; ask for it explicitly.
2. on a GPU, a step under ``SMALL_GPU_STEP_FLOPS`` (the FLOP estimate below) is launch-bound: fp32.
3. a probe costs ``ProbePlan.cost_steps`` steps; it runs only when that is at most ``budget`` of the
   steps the run is expected to take (it cannot pay back otherwise): fp32.
4. the probe trains a copy of the model per candidate on the same batches, in rounds: each candidate
   runs a block of ``steps_per_round`` steps timed as one (as training runs them: alternating single
   steps between models hid most of bf16's gain here), candidates interleaved in ABBA order, so each
   candidate block has an fp32 block timed next to it under the same load. The speed-up is the median
   of these paired ratios, and the candidate must also win at least ``min_wins`` of the pairs (on a
   shared 2-core machine bf16's fastest steps were 1.22x fp32's while its steady-state throughput was
   0.97x: the fastest steps hide what contention costs each candidate). Then each copy's validation
   loss is computed. A candidate wins when it is at least ``min_speedup`` faster than fp32 AND its
   validation loss stays within ``loss_rtol`` of fp32's. The RNG state is restored afterwards, so the
   real run trains exactly as if the chosen precision had been asked for. The verdict is remembered
   within the process for the same model, data and settings (so repeated fits agree); nothing is
   cached across processes. For a bit-identical rerun, ask for the precision recorded in meta.json.

The choice and its measured reason are logged and end up in ``Accel.reason`` (and the run's meta.json).
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lstmcast.model.estimate import Dims, flops_per_step
from lstmcast.training import decision_cache
from lstmcast.training.accel import Accel, cpu_bf16_flags, cpu_bf16_runs, set_tf32

if TYPE_CHECKING:
    from lstmcast.config import TrainConfig
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.records import TrainData

log = logging.getLogger(__name__)

# Below this many FLOPs per training step a GPU LSTM step is bound by launches, not arithmetic: on an
# H100 fp16/bf16 ran 0.6-0.7x of fp32 and tf32 +-10% at (64x2, L96, B<=1024, ~4e10 FLOPs) (docs/PERFORMANCE.md).
SMALL_GPU_STEP_FLOPS = 1e11


@dataclass(frozen=True)
class ProbePlan:
    """How much the probe measures, and what it takes to leave fp32."""

    warmup: int = 2  # steps per candidate before timing (allocator, oneDNN/cuDNN kernel choice, graph capture)
    rounds: int = 6  # interleaved timing rounds (ABBA: the order flips every round); one pair per round
    # each candidate runs a block of steps per round, timed as one: alternating single steps between
    # models measured bf16 at 1.15x on this CPU where blocks (as in training) showed 1.38x
    steps_per_round: int = 4
    budget: float = 0.05  # the probe may cost at most this fraction of the expected training steps
    min_speedup: float = 1.10  # median paired speed-up needed to leave fp32 (below this, noise) ...
    min_wins: float = 2 / 3  # ... and the share of paired steps the candidate must win (a sign test)
    loss_rtol: float = 0.05  # validation loss after the probe within 5% of fp32's ...
    loss_atol: float = 1e-3  # ... plus this, for losses near zero
    val_windows: int = 2048  # the probe validates on an evenly spaced subset of at most this many windows

    @property
    def probe_steps(self) -> int:
        return self.warmup + self.rounds * self.steps_per_round

    def cost_steps(self, n_candidates: int) -> int:
        """Training-step equivalents the probe costs (validation passes counted as one step each)."""
        return n_candidates * (self.probe_steps + 1)


@dataclass
class Measured:
    """One candidate's probe result: seconds of each timed step, validation loss after the probe."""

    precision: str
    seconds: list[float] = field(default_factory=list)
    val_loss: float = math.nan


def candidates(device: torch.device, cpuinfo: str | None = None) -> tuple[list[str], str]:
    """The precisions ``auto`` may choose from on ``device``, and why."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return ["fp32", "tf32", "bf16"], f"{name} runs fp32, tf32 and bf16"
        return ["fp32", "tf32"], f"{name} has no bf16 (auto never picks fp16: ask for it explicitly)"
    flags = cpu_bf16_flags(cpuinfo)
    if flags and (cpuinfo is not None or cpu_bf16_runs()):
        return ["fp32", "bf16"], f"this CPU has {' and '.join(flags)}"
    if flags:
        return ["fp32"], f"this CPU has {' and '.join(flags)} but its oneDNN has no bf16 LSTM kernels"
    return ["fp32"], "this CPU has neither AMX-BF16 nor AVX512-BF16, so bf16 would be emulated (slower)"


def lstm_step_flops(input_size: int, hidden: int, layers: int, directions: int, window: int, batch: int,
                    outputs: int) -> float:
    """Approximate FLOPs of one training step (forward + backward ~ 3x forward) of LSTM + linear head."""
    d = Dims(B=batch, L=window, H=outputs, F=input_size, T=1, D=directions, hidden=hidden, layers=layers)
    return float(flops_per_step(d))


def model_step_flops(model: LSTMForecaster, window: int, batch: int) -> float:
    """``lstm_step_flops`` for an ``LSTMForecaster`` (reads its sizes)."""
    return lstm_step_flops(model.input_size, model.hidden_size, model.num_layers, model.num_directions,
                           window, batch, model.horizon * model.n_targets)


def expected_steps(cfg: TrainConfig, n_train: int) -> int:
    """Training steps the run will likely take: early stopping usually ends it within ~3 x patience epochs."""
    per_epoch = max(1, min(n_train, cfg.windows_per_epoch or n_train) // cfg.batch_size)
    if cfg.max_steps_per_epoch:
        per_epoch = min(per_epoch, cfg.max_steps_per_epoch)
    return per_epoch * min(cfg.max_epochs, max(10, 3 * cfg.patience))


def decide(measured: list[Measured], plan: ProbePlan) -> tuple[str, str]:
    """Pick a precision from the probe; ``measured[0]`` is fp32. Returns (precision, measured reason).

    ``seconds`` are aligned: entry i of every candidate was timed back to back (one ABBA slot), so
    ``ref.seconds[i] / m.seconds[i]`` compares the two under the same load from other processes.
    """
    ref = measured[0]
    best, best_speed, notes = "fp32", 1.0, []
    for m in measured[1:]:
        ratios = [a / b for a, b in zip(ref.seconds, m.seconds) if b > 0]
        speed = statistics.median(ratios) if ratios else 0.0
        wins = sum(r > 1.0 for r in ratios)
        limit = ref.val_loss * (1 + plan.loss_rtol) + plan.loss_atol
        loss_ok = math.isfinite(m.val_loss) and m.val_loss <= limit
        note = (f"{m.precision} {speed:.2f}x fp32's speed (faster in {wins} of {len(ratios)} paired blocks; median "
                f"{_ms(m)} vs {_ms(ref)} ms/step), validation loss {m.val_loss:.4g} vs {ref.val_loss:.4g}")
        fast = speed >= plan.min_speedup and wins >= plan.min_wins * len(ratios)
        if not loss_ok:
            note += f" (beyond the {plan.loss_rtol:.0%} tolerance)"
        elif not fast:
            note += f" (needs {plan.min_speedup:.2f}x, faster in {plan.min_wins:.0%} of the pairs)"
        notes.append(note)
        if loss_ok and fast and speed > best_speed:
            best, best_speed = m.precision, speed
    how = (f"{plan.rounds} interleaved blocks of {plan.steps_per_round} steps each after {plan.warmup} "
           "warm-up")
    return best, f"auto: {best}, measured over {how}: " + "; ".join(notes)


def typical_cost(seconds: list[float]) -> float:
    """Median step time: the odd descheduled step does not move it."""
    return statistics.median(seconds) if seconds else math.inf


def _ms(m: Measured) -> str:
    return f"{typical_cost(m.seconds) * 1e3:.2f}"


def skip_reason(accel: Accel, model: LSTMForecaster, cfg: TrainConfig, n_train: int, window: int,
                plan: ProbePlan, cands: list[str], why: str) -> str | None:
    """Why fp32 is chosen without a probe, or None when the probe should run."""
    if len(cands) == 1:
        return f"auto: fp32, {why}"
    if accel.device.type == "cuda":
        flops = model_step_flops(model, window, cfg.batch_size)
        if flops < SMALL_GPU_STEP_FLOPS:
            return (f"auto: fp32, a step is ~{flops / 1e9:.1f} GFLOP, launch-bound on a GPU where mixed "
                    f"precision only adds casts (measured slower below ~{SMALL_GPU_STEP_FLOPS / 1e9:.0f} GFLOP)")
    need, planned = plan.cost_steps(len(cands)), expected_steps(cfg, n_train)
    if need > plan.budget * planned:
        return (f"auto: fp32, the run is too short to pay back a precision probe (~{planned} steps expected, "
                f"the probe costs ~{need}, over the {plan.budget:.0%} budget); ask for bf16 to use it anyway")
    return None


_DECIDED: dict[tuple, tuple[str, str]] = {}  # in-process memo: probe key -> (precision, reason)


def probe_key(accel: Accel, model: nn.Module, cfg: TrainConfig, data: TrainData) -> tuple:
    """What the verdict depends on: device, threads, model, settings and (a fingerprint of) the data."""
    w = data.windows  # (rows, C, L + H): every row of the series is the first step of a window or in the last
    total = float(w[:, :, 0].double().sum() + w[-1, :, 1:].double().sum()) if len(w) else 0.0
    fingerprint = (tuple(w.shape), total, len(data.train_idx), len(data.val_idx))
    return (str(accel.device), accel.threads, accel.graphs, repr(model), data.roles.window, data.roles.horizon,
            repr(sorted(cfg.model_dump().items())), fingerprint)


def settle(accel: Accel, model: LSTMForecaster, cfg: TrainConfig, data: TrainData, *,
           make_trainer: Callable[..., Any], plan: ProbePlan | None = None) -> Accel:
    """Resolve a pending ``precision: auto`` into a measured choice; any other Accel is returned as is.

    ``make_trainer(model, cfg, accel, data)`` builds the Trainer the probe times (lstmcast's own step,
    graphed on CUDA, not a stand-in); the loop passes its class, so this module never imports the loop."""
    if not accel.pending:
        return accel
    plan = plan or ProbePlan()
    cands, why = candidates(accel.device)
    reason = skip_reason(accel, model, cfg, len(data.train_idx), data.roles.window, plan, cands, why)
    if reason is None:
        key = probe_key(accel, model, cfg, data)
        cached = _DECIDED.get(key) or decision_cache.read(key)
        if cached is not None:
            choice, reason = cached
            reason += " (measured earlier on this machine for the same model, data and settings)"
        else:
            t0 = time.perf_counter()
            measured = run_probe(cands, accel, model, cfg, data, plan, make_trainer)
            choice, reason = decide(measured, plan)
            reason += f"; {why}; the probe took {time.perf_counter() - t0:.1f} s"
            decision_cache.write(key, choice, reason)
        _DECIDED[key] = (choice, reason)
    else:
        choice = "fp32"
    set_tf32(accel.device, choice == "tf32")
    log.info("precision %s (%s)", choice, reason)
    return replace(accel, precision=choice, reason=reason)


def run_probe(cands: list[str], accel: Accel, model: nn.Module, cfg: TrainConfig, data: TrainData,
              plan: ProbePlan, make_trainer: Callable[..., Any]) -> list[Measured]:
    """Train one copy of ``model`` per candidate on the same batches, interleaved; see the module doc."""
    train_idx = data.train_idx
    dev = train_idx.device
    gen = torch.Generator(device=dev)
    gen.manual_seed(cfg.seed + 7919)
    B = min(cfg.batch_size, len(train_idx))
    batches = [train_idx[torch.randint(len(train_idx), (B,), generator=gen, device=dev)]
               for _ in range(plan.probe_steps)]
    val_sub = _subset(data.val_idx, plan.val_windows)
    rng_devices = [accel.device] if accel.device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        trainers = {c: make_trainer(copy.deepcopy(model), cfg, replace(accel, precision=c, requested=c, reason="probe"),
                                    replace(data, val_idx=val_sub)) for c in cands}
        results = {c: Measured(c) for c in cands}
        for c, t in trainers.items():
            _timed(accel.device, c, t.train_step, batches[:plan.warmup])
        for r in range(plan.rounds):
            first = plan.warmup + r * plan.steps_per_round
            block = batches[first:first + plan.steps_per_round]
            for c in (cands if r % 2 == 0 else cands[::-1]):
                results[c].seconds.append(_timed(accel.device, c, trainers[c].train_step, block))
        for c, t in trainers.items():
            set_tf32(accel.device, c == "tf32")
            results[c].val_loss = t.validate() if len(val_sub) else _last_loss(t, batches[-1])
    return [results[c] for c in cands]


def _timed(device: torch.device, precision: str, step: Callable[[Tensor], object], batches: list[Tensor]) -> float:
    """Seconds per step of ``step`` over ``batches`` (device work included)."""
    set_tf32(device, precision == "tf32")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for idx in batches:
        step(idx)
    sync()
    return (time.perf_counter() - t0) / max(1, len(batches))


def _subset(idx: Tensor, limit: int) -> Tensor:
    if len(idx) <= limit:
        return idx
    pick = torch.linspace(0, len(idx) - 1, limit, device=idx.device).round().long()
    return idx[pick]


@torch.no_grad()
def _last_loss(trainer, idx: Tensor) -> float:
    """Without validation windows, the training loss of the probe's last batch stands in."""
    trainer.model.eval()
    loss = float(trainer.forward_loss(trainer.gather_batch(idx)))
    trainer.model.train()
    return loss
