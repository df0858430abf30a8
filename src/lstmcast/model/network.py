"""LSTMForecaster: the nn.Module only. (B, L, F) -> (B, H, T), direct multi-step head; with quantiles
(B, L, F) -> (B, H, T, Q), Q quantiles ascending, the median the point forecast.

Input roles (data/windows.py's Batch): ``x`` the past (B, L, F), every channel over the window;
``future`` (B, H, K) what is known over the horizon (future covariates, calendar); ``static`` (B, S)
per-series values, numeric ones first, then categorical codes (as floats) that index embeddings.

Shape legend: B batch, L lookback window, F input features (targets first, then covariates),
H horizon, T targets, K known-future inputs, S static inputs, Q quantiles, D directions (2 if
bidirectional). batch_first=True everywhere.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lstmcast.errors import ShapeError
from lstmcast.model.estimate import DECODER_HIDDEN, STEP_DIM, embedding_dim

State = tuple[Tensor, Tensor]


class LSTMForecaster(nn.Module):
    """Stacked (optionally residual, bidirectional) LSTM with a Linear(D * hidden, H * T) head.

    The first ``n_targets`` input channels are the targets' own past. With ``window_norm='mean'``
    (or ``'last'``) the window's mean (or last) target value is subtracted from the target channels
    and added back to the forecast, so the network learns changes relative to the window's level
    (robust to level shifts and trends that leave the training range).

    >>> m = LSTMForecaster(input_size=10, n_targets=1, horizon=4, hidden_size=64, num_layers=2)
    >>> m(torch.zeros(32, 20, 10)).shape
    torch.Size([32, 4, 1])
    """

    def __init__(self, input_size: int, n_targets: int, horizon: int, hidden_size: int = 64,
                 num_layers: int = 2, dropout: float = 0.0, bidirectional: bool = False,
                 residual: bool = False, bias: bool = True,
                 window_norm: Literal["last", "mean", "none"] = "mean", window: int | None = None,
                 linear_skip: bool = False, quantiles: tuple[float, ...] | list[float] | None = None,
                 future_size: int = 0, static_size: int = 0, static_cardinalities: tuple[int, ...] = ()):
        super().__init__()
        if n_targets > input_size:
            raise ShapeError(f"n_targets={n_targets} exceeds input_size={input_size}: targets are input channels too")
        if linear_skip and window is None:
            raise ShapeError("linear_skip=True maps the window to the horizon: pass window=L")
        self.input_size, self.n_targets, self.horizon = input_size, n_targets, horizon
        self.hidden_size, self.num_layers, self.bidirectional = hidden_size, num_layers, bidirectional
        self.residual, self.window_norm, self.window = residual, window_norm, window
        self.num_directions = 2 if bidirectional else 1
        width = self.num_directions * hidden_size
        self.future_size, self.static_size = future_size, static_size
        self.static_cardinalities = tuple(int(c) for c in static_cardinalities)
        self.statics = StaticEncoder(static_size, self.static_cardinalities)
        enc_in = input_size + self.statics.width  # the statics join every step of the encoder's input
        if residual:
            ins = [enc_in] + [width] * (num_layers - 1)
            self.layers = nn.ModuleList(
                nn.LSTM(i, hidden_size, 1, bias=bias, batch_first=True, bidirectional=bidirectional) for i in ins)
            # a projection only where the widths differ (the first layer, usually)
            self.projs = nn.ModuleList(nn.Linear(i, width, bias=False) if i != width else nn.Identity() for i in ins)
            self.drop = nn.Dropout(dropout)
        else:
            self.lstm = nn.LSTM(enc_in, hidden_size, num_layers, bias=bias, batch_first=True,
                                dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.head = nn.Linear(width, horizon * n_targets)
        # known-future inputs enter a decoder over the horizon, conditioned on the encoder's last state
        self.decoder = HorizonDecoder(width, future_size, self.statics.width, horizon, n_targets) \
            if future_size or self.statics.width else None
        self.linear_skip = linear_skip
        if linear_skip and window is not None:  # window None with linear_skip is refused above
            # y = last + skip(x - last) + head(lstm): the skip, shared by the targets, starts as the naive
            # forecast (weights 0) until lstmcast fits it (training/skip_init.py); the head starts at 0 so the
            # LSTM begins from the skip's forecast and learns what the linear map misses
            self.skip = nn.Linear(window, horizon, bias=False)
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        # quantiles (ascending, the median among them): the head above forecasts the median; qhead adds, per
        # side, cumulative softplus offsets from it, so no two quantiles ever cross (output (B, H, T, Q))
        self.quantiles = tuple(float(q) for q in quantiles) if quantiles else None
        if self.quantiles is not None:
            if 0.5 not in self.quantiles or list(self.quantiles) != sorted(set(self.quantiles)):
                raise ShapeError(f"quantiles must be ascending and include the median 0.5, got {self.quantiles}")
            self.n_below = self.quantiles.index(0.5)
            self.qhead = nn.Linear(width, horizon * n_targets * (len(self.quantiles) - 1))

    def init_hidden(self, batch_size: int, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> State:
        """Zero (h0, c0), each (num_layers * D, B, hidden), for users who carry state themselves."""
        shape = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)

    def _check(self, x: Tensor, state: State | None) -> None:
        """The boundary contract (FAULTS.md M1, M2): ShapeError naming expected vs actual and the fix."""
        if not isinstance(x, Tensor):
            raise ShapeError(f"expected x to be a torch.Tensor of shape (B, L, F={self.input_size}), got "
                             f"{type(x).__name__}: convert it with torch.as_tensor(x, dtype=torch.float32)")
        self._check_x_shape(x)
        self._check_placement(x, state)

    def _check_placement(self, x: Tensor, state: State | None) -> None:
        """x on the weights' dtype and device, and (h0, c0) shaped for x (the window and the streaming forward)."""
        weight = self.head.weight
        if x.dtype != weight.dtype or x.device != weight.device:
            raise ShapeError(f"x has dtype {x.dtype} on device {x.device} but the model's weights are "
                             f"{weight.dtype} on {weight.device}: pass x.to(device={str(weight.device)!r}, "
                             f"dtype={weight.dtype})")
        if state is not None:
            self._check_state(x, state)

    def _check_x_shape(self, x: Tensor) -> None:
        F, L = self.input_size, self.window
        want = f"(B, L={L}, F={F})" if L is not None else f"(B, L, F={F})"
        got = tuple(x.shape)
        if x.dim() != 3:
            if x.dim() == 2 and got[1] == F:
                fix = "this looks like one window (L, F); add a batch axis: x.unsqueeze(0)"
            elif x.dim() == 2 and F == 1:
                fix = "this looks like (B, L) without the feature axis; pass x.unsqueeze(-1)"
            else:
                fix = "reshape it to (batch, window, features)"
            raise ShapeError(f"expected x of shape {want}, got {got} ({x.dim()}-D): {fix}")
        if got[2] != F:
            if got[1] == F and (L is None or got[2] == L):
                fix = "this looks like (B, F, L); pass x.transpose(1, 2)"
            else:
                fix = f"the last axis must hold the {F} input features (targets first, then covariates)"
            raise ShapeError(f"expected x of shape {want}, got {got}: {fix}")
        if L is not None and got[1] != L:
            if got[0] == L:
                fix = "this looks like (L, B, F); pass x.transpose(0, 1)"
            elif got[1] > L:
                fix = f"the model was trained on windows of {L} steps; pass the last {L}: x[:, -{L}:]"
            else:
                fix = f"the model was trained on windows of {L} steps; give {L} steps of history"
            raise ShapeError(f"expected x of shape {want}, got {got}: {fix}")

    def _check_roles(self, x: Tensor, future: Tensor | None, static: Tensor | None) -> None:
        """The known-future and static inputs the model was built for, with their shapes (FAULTS M1)."""
        B = x.shape[0]
        for name, got, want in (("future", future, (B, self.horizon, self.future_size) if self.future_size else None),
                                ("static", static, (B, self.static_size + len(self.static_cardinalities))
                                 if self.statics.width else None)):
            if want is None:
                if got is not None:
                    raise ShapeError(f"this model takes no {name} input (it was built without one): drop {name}=")
                continue
            if not isinstance(got, Tensor):
                role = "B, H, K known-future inputs" if name == "future" else "B, S static inputs"
                raise ShapeError(f"this model needs {name}= of shape {want} ({role}), got {type(got).__name__}")
            if tuple(got.shape) != want or got.dtype != x.dtype or got.device != x.device:
                raise ShapeError(f"expected {name} of shape {want}, dtype {x.dtype} on {x.device}, got shape "
                                 f"{tuple(got.shape)}, dtype {got.dtype} on {got.device}")

    def _check_state(self, x: Tensor, state: State) -> None:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ShapeError(f"state must be a pair (h0, c0), got {type(state).__name__}: "
                             "use model.init_hidden(batch_size, device)")
        want = (self.num_layers * self.num_directions, x.shape[0], self.hidden_size)
        for name, s in zip(("h0", "c0"), state):
            if not isinstance(s, Tensor):
                raise ShapeError(f"{name} must be a torch.Tensor, got {type(s).__name__}: "
                                 "use model.init_hidden(batch_size, device)")
            if tuple(s.shape) != want or s.dtype != x.dtype or s.device != x.device:
                raise ShapeError(
                    f"{name} must be shape {want} (num_layers * D, B, hidden), dtype {x.dtype}, device "
                    f"{x.device}; got shape {tuple(s.shape)}, dtype {s.dtype}, device {s.device}: "
                    f"use model.init_hidden({x.shape[0]}, x.device) (batch-first input, but states are "
                    "always (layers * directions, B, hidden))")

    def forward(self, x: Tensor, state: State | None = None, return_state: bool = False,
                future: Tensor | None = None, static: Tensor | None = None):
        # x: (B, L, F); state: (h0, c0) each (num_layers * D, B, hidden); future: (B, H, K); static: (B, S)
        self._check(x, state)
        self._check_roles(x, future, static)
        T = self.n_targets
        x_in, ref = x, None
        if self.window_norm != "none":
            ref = x[:, -1:, :T] if self.window_norm == "last" else x[:, :, :T].mean(dim=1, keepdim=True)  # (B, 1, T)
            x = torch.cat([x[:, :, :T] - ref, x[:, :, T:]], dim=2) if x.shape[2] > T else x - ref
        s = self.statics(static) if self.statics.width else None  # (B, S') numeric + embeddings
        if s is not None:
            x = torch.cat([x, s.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=2)  # (B, L, F + S')
        out, (h_n, c_n) = self._stack(x, state)  # out: (B, L, D * hidden)
        hidden = self.hidden_size
        if self.bidirectional:  # forward direction ends at L-1, backward at 0
            last = torch.cat([out[:, -1, :hidden], out[:, 0, hidden:]], dim=1)  # (B, 2 * hidden)
        else:
            last = out[:, -1]  # (B, hidden)
        y = self.head(last).view(x.shape[0], self.horizon, T)  # (B, H, T)
        if self.decoder is not None:
            y = y + self.decoder(last, future, s)  # (B, H, T): what the known future adds
        if self.linear_skip:
            y = y + self._skip_forecast(x_in[:, :, :T])
        elif ref is not None:
            y = y + ref
        if self.quantiles is not None:
            y = self._quantile_paths(y, last)  # (B, H, T, Q)
        return (y, (h_n, c_n)) if return_state else y

    # -- the carried state (model.stateful, issue 24): the stack run over any number of steps ----------------
    def check_streamable(self) -> None:
        """A carried state needs a model that reads one step at a time: ShapeError saying why otherwise."""
        why = []
        if self.bidirectional:
            why.append("bidirectional (the backward direction reads the steps after each one)")
        if self.window_norm != "none":
            why.append(f"window_norm={self.window_norm!r} (the window's level needs the whole window)")
        if self.linear_skip:
            why.append("linear_skip (it maps a whole window to the horizon)")
        if why:
            raise ShapeError("this model cannot carry its state step by step: " + "; ".join(why)
                             + ": train it with model.stateful: true")

    def encode(self, x: Tensor, state: State | None = None, static: Tensor | None = None) -> tuple[Tensor, State]:
        """The LSTM stack over x (B, n, F), any n >= 1, from ``state`` (zero when None): the top layer's
        outputs (B, n, D * hidden) and the final per-layer (h, c), each (num_layers * D, B, hidden).

        Two calls chained through the state equal one call over the concatenated steps (a chunked forward)."""
        self.check_streamable()
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[2] != self.input_size:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"expected x of shape (B, n, F={self.input_size}), got {got}")
        self._check_placement(x, state)
        self._check_roles(x, None if not self.future_size else
                          torch.zeros(x.shape[0], self.horizon, self.future_size, dtype=x.dtype, device=x.device),
                          static)
        if self.statics.width:
            s = self.statics(static)
            x = torch.cat([x, s.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=2)
        return self._stack(x, state)

    def forecast_from(self, last: Tensor, future: Tensor | None = None, static: Tensor | None = None) -> Tensor:
        """The forecast (B, H, T) (or (B, H, T, Q)) from the top layer's last output ``last`` (B, D * hidden),
        as ``forward`` makes it from its window's last step (a model that reads one step at a time)."""
        self.check_streamable()
        B = last.shape[0]
        probe = last.new_zeros(B, 1, self.input_size)
        self._check_roles(probe, future, static)
        s = self.statics(static) if self.statics.width else None
        y = self.head(last).view(B, self.horizon, self.n_targets)
        if self.decoder is not None:
            y = y + self.decoder(last, future, s)
        if self.quantiles is not None:
            y = self._quantile_paths(y, last)
        return y

    def _stack(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        if self.residual:
            out, h_n, c_n = self._residual_stack(x, state)
            return out, (h_n, c_n)
        out, (h_n, c_n) = self.lstm(x, state)
        return out, (h_n, c_n)

    def _quantile_paths(self, median: Tensor, last: Tensor) -> Tensor:
        # median: (B, H, T); last: (B, D * hidden) -> (B, H, T, Q) ascending: median -+ cumulative offsets
        B, H, T = median.shape
        off = nn.functional.softplus(self.qhead(last)).view(B, H, T, -1)  # (B, H, T, Q - 1) > 0
        below = median.unsqueeze(-1) - off[..., :self.n_below].cumsum(-1)  # nearest the median first
        above = median.unsqueeze(-1) + off[..., self.n_below:].cumsum(-1)
        return torch.cat([below.flip(-1), median.unsqueeze(-1), above], dim=-1)

    def _skip_forecast(self, xt: Tensor) -> Tensor:
        # xt: (B, L, T) the targets' own window -> (B, H, T): last value + a linear map of the changes to it
        last = xt[:, -1:, :]  # (B, 1, T)
        return last + self.skip((xt - last).transpose(1, 2)).transpose(1, 2)

    def _residual_stack(self, x: Tensor, state: State | None) -> tuple[Tensor, Tensor, Tensor]:
        D = self.num_directions
        hs, cs = [], []
        for k, (lstm, proj) in enumerate(zip(self.layers, self.projs)):
            s = None if state is None else (state[0][k * D:(k + 1) * D].contiguous(),
                                            state[1][k * D:(k + 1) * D].contiguous())
            y, (h, c) = lstm(x, s)  # (B, L, D * hidden)
            y = y + proj(x)
            x = self.drop(y) if k < self.num_layers - 1 else y
            hs.append(h)
            cs.append(c)
        return x, torch.cat(hs), torch.cat(cs)

    def extra_repr(self) -> str:
        out = f"(B, H={self.horizon}, T={self.n_targets}" + (f", Q={len(self.quantiles)})" if self.quantiles else ")")
        return (f"(B, L, F={self.input_size}) -> {out}, "
                f"window_norm={self.window_norm}, residual={self.residual}, linear_skip={self.linear_skip}")


class StaticEncoder(nn.Module):
    """Per-series inputs (B, S): numeric ones pass through, each categorical code gets an embedding.

    Code 0 of every categorical is "unknown" (a value or series id not seen in training); its embedding
    is kept at zero, so a new series is forecast from its own history and numeric statics alone.
    """

    def __init__(self, n_numeric: int, cardinalities: tuple[int, ...]):
        super().__init__()
        self.n_numeric = n_numeric
        dims = [embedding_dim(c) for c in cardinalities]  # the doctor counts them with the same rule
        self.embeddings = nn.ModuleList(nn.Embedding(c, d, padding_idx=0) for c, d in zip(cardinalities, dims))
        self.width = n_numeric + sum(dims)

    def forward(self, static: Tensor) -> Tensor:
        # static: (B, S numeric + C codes) -> (B, S numeric + sum of embedding widths)
        parts = [static[:, :self.n_numeric]]
        for k, emb in enumerate(self.embeddings):
            parts.append(emb(static[:, self.n_numeric + k].long()).to(static.dtype))
        return torch.cat(parts, dim=1)


class HorizonDecoder(nn.Module):
    """An MLP applied to every horizon step: [encoder state, that step's known inputs, statics, step] -> T.

    Its last layer starts at zero, so a fresh model forecasts exactly what the encoder's head does and
    learns only what the known future adds (the same start as the LSTM head on the linear skip).
    """

    def __init__(self, width: int, future_size: int, static_width: int, horizon: int, n_targets: int,
                 hidden: int = DECODER_HIDDEN):
        super().__init__()
        self.horizon, self.n_targets = horizon, n_targets
        self.step = nn.Embedding(horizon, STEP_DIM)  # which step ahead: effects can differ by lead time
        first = nn.Linear(width + future_size + static_width + STEP_DIM, hidden)
        out = nn.Linear(hidden, n_targets)  # built in this order: the seeded initial weights stay the same
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(first, nn.GELU(), out)

    def forward(self, last: Tensor, future: Tensor | None, s: Tensor | None) -> Tensor:
        # last: (B, D * hidden); future: (B, H, K); s: (B, S') -> (B, H, T)
        B, H = last.shape[0], self.horizon
        parts = [last.unsqueeze(1).expand(B, H, -1)]
        if future is not None:
            parts.append(future)
        if s is not None:
            parts.append(s.unsqueeze(1).expand(B, H, -1))
        parts.append(self.step.weight.to(last.dtype).unsqueeze(0).expand(B, H, -1))
        return self.net(torch.cat(parts, dim=2))
