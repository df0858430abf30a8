"""Look inside the LSTM on a probe batch: gates, hidden and cell states recomputed in plain tensor maths.

cuDNN (and oneDNN) return only the outputs and the final (h_n, c_n); the gate activations stay hidden.
This module replays nn.LSTM layers from ``weight_ih_l{k}``, ``weight_hh_l{k}`` and the biases, exactly
as PyTorch defines the cell (gate order i, f, g, o)::

    z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        # (B, 4 * hidden)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t)                             # (then h_t W_hr^T with proj_size)

and summarises each layer: gate means and saturated fractions, dead hidden units, h_n and c_n.

Two ways to replay: free-running (every step in Python; the reference) and fast, which takes each
layer's h_{t-1} from the kernel's own outputs so the gates of all steps come from one matmul and only
the cell recurrence stays a loop. Both reproduce the kernel's h_n and c_n (tests check 1e-5); the fast
one is what the monitor runs every epoch.

Shape legend: B batch, L lookback window, F input features, D directions, hidden = hidden_size.

>>> import torch
>>> lstm = torch.nn.LSTM(3, 8, 2, batch_first=True).eval()
>>> x = torch.randn(4, 10, 3)
>>> out, h_n, c_n, layers = recompute_lstm(lstm, x)
>>> bool(torch.allclose(h_n, lstm(x)[1][0], atol=1e-5)), layers[0].units
(True, 8)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn
from torch.func import functional_call

GATES = ("input", "forget", "cell", "output")
SATURATED = 0.05  # a sigmoid gate is saturated below 0.05 or above 0.95; the tanh candidate beyond |0.95|
DEAD = 1e-3  # a hidden unit is dead when |h| < DEAD at every step of every probe sample
# the same thresholds on the pre-activation z: sigmoid(z) outside [0.05, 0.95] <=> |z| > logit(0.95)
_Z_SAT = {"sigmoid": math.log((1 - SATURATED) / SATURATED), "tanh": math.atanh(1 - SATURATED)}


@dataclass
class LayerProbe:
    """One LSTM layer on the probe batch (both directions together)."""

    h_n: Tensor  # (D, B, P)
    c_n: Tensor  # (D, B, hidden)
    gate_mean: dict[str, float]
    gate_saturated: dict[str, float]  # fraction of activations saturated, per gate
    dead_units: int  # of ``units`` = D * P
    units: int

    def summary(self) -> dict[str, float | int | dict[str, float]]:
        return {"gate_mean": self.gate_mean, "gate_saturated": self.gate_saturated,
                "dead_units": self.dead_units, "units": self.units,
                "h_abs_mean": float(self.h_n.abs().mean()), "c_abs_mean": float(self.c_n.abs().mean()),
                "c_abs_max": float(self.c_n.abs().max())}


@dataclass
class Probe:
    """What one probe pass saw: one LayerProbe per LSTM layer, in forward order."""

    layers: list[LayerProbe]
    recompute_error: float = 0.0  # max |recomputed - kernel| over h_n and c_n of every layer
    grads: dict[str, Tensor] = field(default_factory=dict)  # parameter name -> gradient on the probe batch


def _activations(z: Tensor, H: int) -> Tensor:
    """Gate activations (..., 4 * hidden) from pre-activations: sigmoid for i, f, o and tanh for g."""
    act = torch.sigmoid(z)
    act[..., 2 * H:3 * H] = torch.tanh(z[..., 2 * H:3 * H])
    return act


def _scan(x: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor | None, w_hr: Tensor | None, reverse: bool,
          h_seq: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One direction of one layer from zero state. Returns out (B, L, P), h_n (B, P), c_n (B, hidden) and the
    gates' pre-activations z and activations, each (B, L, 4 * hidden).

    ``h_seq`` (B, L, P), the kernel's outputs of this direction, gives every h_{t-1} at once (fast path).
    """
    B, L, _ = x.shape
    H, P = w_ih.shape[0] // 4, w_hh.shape[1]  # P: width of h (proj_size when projecting)
    xw = x.reshape(B * L, -1) @ w_ih.t()  # the input projection of every step in one matmul: (B * L, 4 * hidden)
    if bias is not None:
        xw += bias
    steps = range(L - 1, -1, -1) if reverse else range(L)
    if h_seq is not None:
        return _replay(xw, w_hh, w_hr, h_seq, steps)
    xw = xw.view(B, L, 4 * H)
    h, c = x.new_zeros(B, P), x.new_zeros(B, H)
    z, out, w_hh_t = x.new_empty(L, B, 4 * H), x.new_empty(B, L, P), w_hh.t()
    for t in steps:
        zt = torch.addmm(xw[:, t], h, w_hh_t, out=z[t])  # (B, 4 * hidden)
        s = torch.sigmoid(zt)
        c = torch.addcmul(s[:, H:2 * H] * c, s[:, :H], torch.tanh(zt[:, 2 * H:3 * H]))
        h = s[:, 3 * H:] * torch.tanh(c)
        if w_hr is not None:
            h = h @ w_hr.t()
        out[:, t] = h
    z = z.transpose(0, 1)
    return out, h, c, z, _activations(z, H)


def _replay(xw: Tensor, w_hh: Tensor, w_hr: Tensor | None, h_seq: Tensor,
            steps: range) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The fast path of _scan: with every h_{t-1} known, all gates come from one matmul; only the cell
    recurrence c_t = f_t c_{t-1} + i_t g_t stays a loop (one fused op per step)."""
    B, L, P = h_seq.shape
    H = xw.shape[1] // 4
    prev = h_seq.new_zeros(B, L, P)  # h_{t-1} of every step, zero before the first
    if steps.step < 0:
        prev[:, :-1] = h_seq[:, 1:]
    else:
        prev[:, 1:] = h_seq[:, :-1]
    z = xw.addmm_(prev.view(B * L, P), w_hh.t()).view(B, L, 4 * H)
    act = _activations(z, H)
    u = (act[..., :H] * act[..., 2 * H:3 * H]).transpose(0, 1).contiguous()  # (L, B, hidden): i * g
    f = act[..., H:2 * H].transpose(0, 1).contiguous()
    cs, c = torch.empty_like(u), h_seq.new_zeros(B, H)
    for t in steps:
        c = torch.addcmul(u[t], f[t], c, out=cs[t])
    out = act[..., 3 * H:] * torch.tanh(cs.transpose(0, 1))  # (B, L, hidden)
    if w_hr is not None:
        out = out @ w_hr.t()
    return out, out[:, steps[-1]], c, z, act


def _gate_stats(z: Tensor, act: Tensor) -> tuple[dict[str, float], dict[str, float]]:
    """Mean activation and saturated fraction of each gate, from z and act (B, L, 4 * hidden)."""
    H = z.shape[-1] // 4
    thresholds = z.new_tensor([_Z_SAT["tanh" if g == "cell" else "sigmoid"] for g in GATES])
    means = act.reshape(-1, 4, H).mean(dim=(0, 2))
    saturated = (z.reshape(-1, 4, H).abs() > thresholds[:, None]).sum(dim=(0, 2)) / (z.numel() // 4)
    return ({g: float(v) for g, v in zip(GATES, means.tolist())},
            {g: float(v) for g, v in zip(GATES, saturated.tolist())})


def _layer_weights(lstm: nn.LSTM, k: int) -> dict[str, Tensor]:
    """Layer ``k``'s parameters renamed as layer 0's (``weight_ih_l1_reverse`` -> ``weight_ih_l0_reverse``)."""
    weights: dict[str, Tensor] = {}
    for name, p in lstm.named_parameters():
        m = re.fullmatch(rf"(\w+?)_l{k}(_reverse)?", name)
        if m:
            weights[f"{m.group(1)}_l0{m.group(2) or ''}"] = p
    return weights


@torch.no_grad()
def recompute_layer(lstm: nn.LSTM, k: int, x: Tensor, native_out: Tensor | None = None) -> tuple[Tensor, LayerProbe]:
    """Replay layer ``k`` of ``lstm`` on ``x`` (B, L, F_in) from zero state; returns out (B, L, D * P) and stats.

    ``native_out`` (B, L, D * P), the layer's outputs from the kernel, selects the fast replay.
    """
    weights = _layer_weights(lstm, k)
    D, P = (2 if lstm.bidirectional else 1), lstm.proj_size or lstm.hidden_size
    outs, hs, cs, means, sats = [], [], [], [], []
    for d, suffix in enumerate(("", "_reverse")[:D]):
        w_ih, w_hh = weights[f"weight_ih_l0{suffix}"], weights[f"weight_hh_l0{suffix}"]  # every layer has both
        b_ih, b_hh = weights.get(f"bias_ih_l0{suffix}"), weights.get(f"bias_hh_l0{suffix}")  # bias=False: neither
        bias = b_ih + b_hh if b_ih is not None and b_hh is not None else None
        h_seq = None if native_out is None else native_out[..., d * P:(d + 1) * P]
        out, h, c, z, act = _scan(x, w_ih, w_hh, bias, weights.get(f"weight_hr_l0{suffix}"), d == 1, h_seq)
        outs.append(out)
        hs.append(h)
        cs.append(c)
        m, s = _gate_stats(z, act)
        means.append(m)
        sats.append(s)
    out = torch.cat(outs, dim=2)  # (B, L, D * P)
    peak = out.abs().amax(dim=(0, 1))  # (D * P,): the largest |h| of each unit
    probe = LayerProbe(h_n=torch.stack(hs), c_n=torch.stack(cs),
                       gate_mean={g: sum(m[g] for m in means) / D for g in GATES},
                       gate_saturated={g: sum(s[g] for s in sats) / D for g in GATES},
                       dead_units=int((peak < DEAD).sum()), units=int(peak.numel()))
    return out, probe


def _native_layer(lstm: nn.LSTM, k: int, x: Tensor) -> Tensor:
    """Layer ``k`` of ``lstm`` alone through the fast kernel: a weightless 1-layer twin run on layer k's weights."""
    twin = nn.LSTM(x.shape[2], lstm.hidden_size, 1, bias=lstm.bias, batch_first=True,
                   bidirectional=lstm.bidirectional, proj_size=lstm.proj_size, device="meta")
    return functional_call(twin, _layer_weights(lstm, k), (x,))[0]


@torch.no_grad()
def recompute_lstm(lstm: nn.LSTM, x: Tensor, fast: bool = False,
                   native_out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, list[LayerProbe]]:
    """Replay a whole nn.LSTM in eval mode from zero state.

    Returns out, h_n (num_layers * D, B, P), c_n (num_layers * D, B, hidden) as ``lstm(x)`` would (inter-layer
    dropout off, as in eval mode), and one LayerProbe per layer. ``fast=True`` takes each layer's h_{t-1} from
    the kernel (``native_out``: the module's own output, which is the last layer's, when already known).
    """
    if not lstm.batch_first:
        x = x.transpose(0, 1)
        native_out = None if native_out is None else native_out.transpose(0, 1)
    layers = []
    for k in range(lstm.num_layers):
        native = None
        if fast:
            last = k == lstm.num_layers - 1
            native = native_out if last and native_out is not None else _native_layer(lstm, k, x)
        x, probe = recompute_layer(lstm, k, x, native)
        layers.append(probe)
    out = x if lstm.batch_first else x.transpose(0, 1)
    return out, torch.cat([p.h_n for p in layers]), torch.cat([p.c_n for p in layers]), layers


def lstm_modules(model: nn.Module) -> list[nn.LSTM]:
    """The nn.LSTM modules of a model in forward order (``model.lstm``, or the residual ``model.layers``)."""
    return [m for m in model.modules() if isinstance(m, nn.LSTM)]


def probe_model(model: nn.Module, x: Tensor, y: Tensor | None = None,
                loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None, *, future: Tensor | None = None,
                static: Tensor | None = None) -> Probe:
    """Run ``model`` once on the probe batch x (B, L, F) in eval mode and fp32, capture each LSTM's real input
    with a hook (so window_norm, residual projections and any other preprocessing are the model's own), and
    replay every layer. With targets ``y`` (B, H, T) and ``loss_fn`` also take every parameter's gradient of
    that loss. Nothing in the model changes: no ``.grad`` is written, no random number is drawn, the mode
    is restored.
    """
    captured: list[tuple[nn.LSTM, Tensor, Tensor, Tensor, Tensor]] = []

    def hook(module: nn.Module, args: tuple, output: tuple) -> None:
        # registered on lstm_modules(model) only, so module is an nn.LSTM
        out, (h_n, c_n) = output
        captured.append((cast(nn.LSTM, module), args[0].detach(), out.detach(), h_n.detach(), c_n.detach()))

    handles = [m.register_forward_hook(hook) for m in lstm_modules(model)]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    want_grads = y is not None and loss_fn is not None and bool(named)
    was_training = model.training
    model.eval()
    grads: dict[str, Tensor] = {}
    try:
        # cuDNN refuses backward in eval mode; its native fallback computes the same gradients
        with torch.backends.cudnn.flags(enabled=not want_grads), torch.set_grad_enabled(want_grads):
            pred = model(x, future=future, static=static) if future is not None or static is not None \
                else model(x)
            if want_grads and loss_fn is not None and y is not None:  # the check repeated for the type checker
                loss = loss_fn(pred.float(), y)
                found = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
                grads = {n: g for (n, _), g in zip(named, found) if g is not None}
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    layers, error = [], 0.0
    for lstm, inp, out, h_n, c_n in captured:
        _, h_re, c_re, probes = recompute_lstm(lstm, inp.float(), fast=True, native_out=out.float())
        error = max(error, float((h_re - h_n).abs().max()), float((c_re - c_n).abs().max()))
        layers.extend(probes)
    return Probe(layers=layers, recompute_error=error, grads=grads)
