"""Shapes, parameters, memory and FLOPs of an LSTMForecaster: pure arithmetic on a few numbers.

The doctor reports these, ``model.hidden_size: auto`` sizes with them (sizing.py) and the precision probe
budgets with them, so each formula exists once. Legend as in model.py: B batch, L window, H horizon,
F input features, T targets, D directions, Q quantiles.

>>> n_parameters(Dims(B=32, L=20, H=1, F=10, T=1, D=1, hidden=64, layers=2))
52801
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dims:
    """The numbers that fix every shape: legend B, L, H, F, T, D as in model.py."""

    B: int
    L: int
    H: int
    F: int
    T: int
    D: int
    hidden: int
    layers: int
    residual: bool = False
    bias: bool = True
    skip: bool = False  # model.linear_skip: Linear(L, H) from each target's window to its horizon
    Q: int = 0  # model.levels: quantiles forecast (the median included); 0: a point forecast

    @property
    def width(self) -> int:
        return self.D * self.hidden


@dataclass(frozen=True)
class ShapeRow:
    name: str
    shape: tuple[int, ...]
    legend: str
    note: str = ""


@dataclass(frozen=True)
class LayerCount:
    name: str
    params: int
    detail: str


def trace(d: Dims, window_norm: str = "last") -> list[ShapeRow]:
    state = (d.layers * d.D, d.B, d.hidden)
    last = "last step: forward state at L-1" + (" ++ backward state at step 0" if d.D == 2 else "")
    rows = [ShapeRow("input x", (d.B, d.L, d.F), "(B, L, F)",
                     "batch_first=True: batch, window steps, features (targets first)"),
            ShapeRow("h0, c0", state, "(num_layers * D, B, hidden)",
                     "zeros unless given; this layout whatever batch_first is")]
    if d.residual and d.F != d.width:
        rows.append(ShapeRow("residual projection", (d.B, d.L, d.width), "(B, L, D * hidden)",
                             f"Linear({d.F}, {d.width}) on layer 1's input so the skip can be added"))
    rows += [ShapeRow("lstm output", (d.B, d.L, d.width), "(B, L, D * hidden)",
                      "bidirectional: both directions concatenated" if d.D == 2 else ""),
             ShapeRow("h_n, c_n", state, "(num_layers * D, B, hidden)", "same shape as h0, c0"),
             ShapeRow("head input", (d.B, d.width), "(B, D * hidden)", last),
             ShapeRow("head output", (d.B, d.H * d.T), "(B, H * T)", f"Linear({d.width}, {d.H * d.T})"),
             ShapeRow("forecast y", (d.B, d.H, d.T), "(B, H, T)",
                      "head output viewed as horizon x targets"
                      + ("; + last value + Linear(L, H) of the targets' window (linear skip)" if d.skip else
                         "; + the window's last value (window_norm=last)" if window_norm == "last" else ""))]
    if d.Q:
        out = d.H * d.T * (d.Q - 1)
        rows += [ShapeRow("quantile head output", (d.B, out), "(B, H * T * (Q - 1))", f"Linear({d.width}, {out})"),
                 ShapeRow("quantiles y", (d.B, d.H, d.T, d.Q), "(B, H, T, Q)",
                          "median -+ cumulative softplus offsets: ascending, never crossing")]
    return rows


def lstm_layer_params(in_size: int, hidden: int, directions: int, bias: bool) -> int:
    """One nn.LSTM layer: per direction W_ih (4h x in), W_hh (4h x h) and two biases (4h each)."""
    return directions * (4 * hidden * (in_size + hidden) + (8 * hidden if bias else 0))


def layer_counts(d: Dims) -> list[LayerCount]:
    rows = []
    for k in range(d.layers):
        ins = d.F if k == 0 else d.width
        bias = f" + 8*{d.hidden}" if d.bias else ""
        rows.append(LayerCount(f"lstm layer {k + 1}", lstm_layer_params(ins, d.hidden, d.D, d.bias),
                               f"{d.D} x (4*{d.hidden}*({ins} + {d.hidden}){bias})"))
        if d.residual and ins != d.width:
            rows.append(LayerCount(f"projection {k + 1}", ins * d.width, f"Linear({ins}, {d.width}, bias=False)"))
    out = d.H * d.T
    rows.append(LayerCount("head", d.width * out + out, f"Linear({d.width}, {out})"))
    if d.Q:
        qout = out * (d.Q - 1)
        rows.append(LayerCount("quantile head", d.width * qout + qout, f"Linear({d.width}, {qout})"))
    if d.skip:
        rows.append(LayerCount("linear skip", d.L * d.H, f"Linear({d.L}, {d.H}, bias=False) on each target's window"))
    return rows


def n_parameters(d: Dims) -> int:
    return sum(c.params for c in layer_counts(d))


def memory_bytes(d: Dims, params: int, activation_bytes: int) -> int:
    """Training memory estimate: fp32 weights, grads and AdamW moments (16 B/param, also under autocast),
    the fp32 batch, and per layer and direction the activations kept for backward (input, 4 gates,
    cell and hidden state: B * L * (in + 6 * hidden)) at ``activation_bytes`` per element."""
    acts = d.B * d.width + d.B * d.H * d.T
    for k in range(d.layers):
        ins = d.F if k == 0 else d.width
        acts += d.D * d.B * d.L * (ins + 6 * d.hidden) + (d.B * d.L * d.width if d.residual else 0)
    return 16 * params + 4 * d.B * (d.L * d.F + d.H * d.T) + activation_bytes * acts


def flops_per_step(d: Dims) -> int:
    """Matmul FLOPs (2 per multiply-add) of one training step: forward, and backward as 2x forward."""
    fwd = 2 * d.B * d.width * d.H * d.T
    for k in range(d.layers):
        ins = d.F if k == 0 else d.width
        fwd += d.D * 2 * d.B * d.L * 4 * d.hidden * (ins + d.hidden)
        if d.residual and ins != d.width:
            fwd += 2 * d.B * d.L * ins * d.width
    return 3 * fwd
