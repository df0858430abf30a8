"""Shapes, parameters, memory and FLOPs of an LSTMForecaster: pure arithmetic on a few numbers.

The doctor reports these, ``model.hidden_size: auto`` sizes with them (sizing.py) and the precision probe
budgets with them, so each formula exists once. Legend as in network.py: B batch, L window, H horizon,
F input features, T targets, D directions, Q quantiles, K known-future inputs, S static inputs (numeric ones
and categorical codes), S' their encoding (numeric ones and the embeddings).

>>> n_parameters(Dims(B=32, L=20, H=1, F=10, T=1, D=1, hidden=64, layers=2))
52801
"""

from __future__ import annotations

from dataclasses import dataclass

STEP_DIM = 8  # the decoder's embedding of the step ahead (network.HorizonDecoder)
DECODER_HIDDEN = 64  # the decoder MLP's hidden width


def embedding_dim(cardinality: int) -> int:
    """Width of a categorical static's embedding (network.StaticEncoder): a common rule of thumb, 2..16."""
    return min(16, max(2, round(1.6 * cardinality ** 0.56)))


@dataclass(frozen=True)
class Dims:
    """The numbers that fix every shape: legend B, L, H, F, T, D, K, S as in network.py."""

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
    K: int = 0  # known-future inputs per horizon step (future features, calendar sin/cos): the decoder's
    S: int = 0  # numeric statics
    cards: tuple[int, ...] = ()  # categorical statics' cardinalities (code 0 "unknown" included), id last

    @property
    def width(self) -> int:
        return self.D * self.hidden

    @property
    def static_in(self) -> int:
        """S: the static input's columns, numeric ones then one code per categorical."""
        return self.S + len(self.cards)

    @property
    def static_width(self) -> int:
        """S': the static encoding, numeric ones then the embeddings, joined to every encoder step."""
        return self.S + sum(embedding_dim(c) for c in self.cards)

    @property
    def enc_in(self) -> int:
        """The first LSTM layer's input: F channels + S' static encoding."""
        return self.F + self.static_width

    @property
    def decoder(self) -> bool:
        """Known-future inputs or statics: a decoder over the horizon adds to the head's forecast."""
        return bool(self.K or self.static_width)

    @property
    def decoder_in(self) -> int:
        return self.width + self.K + self.static_width + STEP_DIM


@dataclass(frozen=True)
class InputRoles:
    """What the channels of x and the static columns are, for the trace's notes (the sizes are in Dims)."""

    targets: int = 1
    past_features: int = 0
    future_features: int = 0
    calendar: tuple[str, ...] = ()  # calendar features, each a sin and a cos channel
    static_numeric: tuple[str, ...] = ()
    static_categorical: tuple[str, ...] = ()  # in code order; "series id" last with model.id_embedding


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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _sum(parts: list[tuple[int, str]]) -> str:
    return " + ".join(_plural(n, w) for n, w in parts if n)


def input_rows(d: Dims, roles: InputRoles | None = None) -> list[ShapeRow]:
    """One row per input role: past x (F broken down), known-future (B, H, K), static (B, S) and its encoding."""
    r = roles
    note = "batch_first=True: batch, window steps, features (targets first)"
    if r is not None and d.F > r.targets:
        cal = f" ({', '.join(r.calendar)}: sin, cos)" if r.calendar else ""
        note += "; F = " + _sum([(r.targets, "target"), (r.past_features, "past feature"), (r.future_features,
                                 "future feature"), (2 * len(r.calendar), "calendar channel")]) + cal
    rows = [ShapeRow("input x", (d.B, d.L, d.F), "(B, L, F)", note)]
    if d.K:
        parts = f"K = {_sum([(r.future_features, 'future feature'), (2 * len(r.calendar), 'calendar channel')])}: " \
            if r is not None else ""
        rows.append(ShapeRow("input future", (d.B, d.H, d.K), "(B, H, K)",
                             parts + "known over the horizon (the same channels as x's last K), into the decoder"))
    if d.static_in:
        names = list(r.static_categorical) if r is not None else [f"code {k + 1}" for k in range(len(d.cards))]
        terms = [f"{d.S} numeric"] if d.S else []
        if d.cards:
            terms.append(f"{_plural(len(d.cards), 'categorical code')} ({', '.join(names)})")
        rows.append(ShapeRow("input static", (d.B, d.static_in), "(B, S)", "per series: S = " + " + ".join(terms)))
        embs = [f"{n} Embedding({c}, {embedding_dim(c)})" for n, c in zip(names, d.cards)]
        rows += [ShapeRow("static encoding", (d.B, d.static_width), "(B, S')",
                          " + ".join([f"{d.S} numeric"] * bool(d.S) + embs)
                          + (" (code 0, unknown, embeds to 0)" if embs else "")),
                 ShapeRow("encoder input", (d.B, d.L, d.enc_in), "(B, L, F + S')",
                          "x ++ the static encoding, repeated over the L steps")]
    return rows


def trace(d: Dims, window_norm: str = "last", roles: InputRoles | None = None) -> list[ShapeRow]:
    state = (d.layers * d.D, d.B, d.hidden)
    last = "last step: forward state at L-1" + (" ++ backward state at step 0" if d.D == 2 else "")
    rows = input_rows(d, roles) + [ShapeRow("h0, c0", state, "(num_layers * D, B, hidden)",
                                            "zeros unless given; this layout whatever batch_first is")]
    if d.residual and d.enc_in != d.width:
        rows.append(ShapeRow("residual projection", (d.B, d.L, d.width), "(B, L, D * hidden)",
                             f"Linear({d.enc_in}, {d.width}) on layer 1's input so the skip can be added"))
    rows += [ShapeRow("lstm output", (d.B, d.L, d.width), "(B, L, D * hidden)",
                      "bidirectional: both directions concatenated" if d.D == 2 else ""),
             ShapeRow("h_n, c_n", state, "(num_layers * D, B, hidden)", "same shape as h0, c0"),
             ShapeRow("head input", (d.B, d.width), "(B, D * hidden)", last),
             ShapeRow("head output", (d.B, d.H * d.T), "(B, H * T)", f"Linear({d.width}, {d.H * d.T})")]
    if d.decoder:
        joined = " ++ ".join(["head input"] + ["future"] * bool(d.K) + ["static encoding"] * bool(d.static_width))
        rows += [ShapeRow("decoder input", (d.B, d.H, d.decoder_in), "(B, H, D * hidden + K + S' + 8)",
                          f"per horizon step: {joined} ++ an embedding of the step ahead ({STEP_DIM})"),
                 ShapeRow("decoder output", (d.B, d.H, d.T), "(B, H, T)",
                          f"Linear({d.decoder_in}, {DECODER_HIDDEN}) -> GELU -> Linear({DECODER_HIDDEN}, {d.T}); "
                          "added to the head's forecast (starts at 0)")]
    rows.append(ShapeRow("forecast y", (d.B, d.H, d.T), "(B, H, T)",
                         "head output viewed as horizon x targets" + (" + decoder output" if d.decoder else "")
                         + ("; + last value + Linear(L, H) of the targets' window (linear skip)" if d.skip else
                            "; + the window's last value (window_norm=last)" if window_norm == "last" else "")))
    if d.Q:
        out = d.H * d.T * (d.Q - 1)
        rows += [ShapeRow("quantile head output", (d.B, out), "(B, H * T * (Q - 1))", f"Linear({d.width}, {out})"),
                 ShapeRow("quantiles y", (d.B, d.H, d.T, d.Q), "(B, H, T, Q)",
                          "median -+ cumulative softplus offsets: ascending, never crossing")]
    return rows


def lstm_layer_params(in_size: int, hidden: int, directions: int, bias: bool) -> int:
    """One nn.LSTM layer: per direction W_ih (4h x in), W_hh (4h x h) and two biases (4h each)."""
    return directions * (4 * hidden * (in_size + hidden) + (8 * hidden if bias else 0))


def layer_counts(d: Dims, roles: InputRoles | None = None) -> list[LayerCount]:
    rows = []
    names = list(roles.static_categorical) if roles is not None else [f"code {k + 1}" for k in range(len(d.cards))]
    for name, c in zip(names, d.cards):
        rows.append(LayerCount(f"static embedding {name}", c * embedding_dim(c),
                               f"Embedding({c}, {embedding_dim(c)}), code 0 (unknown) fixed at 0"))
    for k in range(d.layers):
        ins = d.enc_in if k == 0 else d.width
        bias = f" + 8*{d.hidden}" if d.bias else ""
        rows.append(LayerCount(f"lstm layer {k + 1}", lstm_layer_params(ins, d.hidden, d.D, d.bias),
                               f"{d.D} x (4*{d.hidden}*({ins} + {d.hidden}){bias})"))
        if d.residual and ins != d.width:
            rows.append(LayerCount(f"projection {k + 1}", ins * d.width, f"Linear({ins}, {d.width}, bias=False)"))
    out = d.H * d.T
    rows.append(LayerCount("head", d.width * out + out, f"Linear({d.width}, {out})"))
    if d.decoder:
        n, h = d.decoder_in, DECODER_HIDDEN
        rows += [LayerCount("decoder step embedding", d.H * STEP_DIM, f"Embedding({d.H}, {STEP_DIM})"),
                 LayerCount("decoder layer 1", n * h + h, f"Linear({n}, {h})"),
                 LayerCount("decoder layer 2", h * d.T + d.T, f"Linear({h}, {d.T})")]
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
    the fp32 batch (x, future, static, targets), and per layer and direction the activations kept for backward
    (input, 4 gates, cell and hidden state: B * L * (in + 6 * hidden)) at ``activation_bytes`` per element;
    the decoder keeps its input, hidden layer (twice: before and after GELU) and output per horizon step."""
    acts = d.B * d.width + d.B * d.H * d.T
    for k in range(d.layers):
        ins = d.enc_in if k == 0 else d.width
        acts += d.D * d.B * d.L * (ins + 6 * d.hidden) + (d.B * d.L * d.width if d.residual else 0)
    if d.decoder:
        acts += d.B * d.H * (d.decoder_in + 2 * DECODER_HIDDEN + d.T)
    batch = d.L * d.F + d.H * d.T + d.H * d.K + d.static_in
    return 16 * params + 4 * d.B * batch + activation_bytes * acts


def flops_per_step(d: Dims) -> int:
    """Matmul FLOPs (2 per multiply-add) of one training step: forward, and backward as 2x forward."""
    fwd = 2 * d.B * d.width * d.H * d.T
    for k in range(d.layers):
        ins = d.enc_in if k == 0 else d.width
        fwd += d.D * 2 * d.B * d.L * 4 * d.hidden * (ins + d.hidden)
        if d.residual and ins != d.width:
            fwd += 2 * d.B * d.L * ins * d.width
    if d.decoder:
        fwd += 2 * d.B * d.H * DECODER_HIDDEN * (d.decoder_in + d.T)
    return 3 * fwd
