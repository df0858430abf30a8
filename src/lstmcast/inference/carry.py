"""The carried-state model inputs (model.stateful, issue 24), shared by streaming (inference/stateful.py) and the
backtest (inference/predict.py): each row as the model reads it, and the forecast at every origin of one pass."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from lstmcast.data import scaling, transform

if TYPE_CHECKING:
    from lstmcast.data.validate import SeriesSet
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.run.meta import RunMeta


def model_rows(series: SeriesSet, meta: RunMeta, mean: np.ndarray, std: np.ndarray, sidx: np.ndarray,
               starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's input rows (N, F) of series ``sidx`` from row ``starts[k]`` on, concatenated in series order, and
    their counts (K,): transformed and scaled as training scaled them, the mask channel (1: real rows) and
    the calendar channels, as ``forecast_frame`` builds a window."""
    from lstmcast.data.inputs import InputSpec, calendar_block

    T = meta.n_targets
    counts = np.array([len(series.values[i]) - s for i, s in zip(sidx.tolist(), starts.tolist())], np.int64)
    if not len(sidx) or not counts.sum():
        width = model_width(meta)
        return np.zeros((0, width), np.float32), counts
    vals = np.concatenate([series.values[i][s:] for i, s in zip(sidx.tolist(), starts.tolist())])
    times = np.concatenate([series.times[i][s:] for i, s in zip(sidx.tolist(), starts.tolist())])
    owner = np.repeat(np.arange(len(sidx)), counts)
    x = scaling.transform(transform.forward(vals, T, meta.transform), mean[owner], std[owner])  # (N, C)
    if meta.mask_channel:
        at = T + len(meta.features) if meta.layout != "wide" else 1 + len(meta.features)
        x = np.concatenate([x[:, :at], np.ones((len(x), 1), np.float32), x[:, at:]], axis=1)
    spec = InputSpec.from_dict(meta.inputs_dict())
    cal = calendar_block(spec, times, meta.tz)
    x = np.concatenate([x, cal], axis=1) if cal.shape[1] else x
    return np.ascontiguousarray(x, dtype=np.float32), counts


def model_width(meta: RunMeta) -> int:
    return int(meta.input_size)


def origin_forecasts(model: LSTMForecaster, series: SeriesSet, meta: RunMeta, mean: np.ndarray, std: np.ndarray,
                     sidx: np.ndarray, origins: np.ndarray, future: np.ndarray | None) -> np.ndarray:
    """The scaled forecasts (P, H, T[, Q]) at the (series ``sidx``, origin ``origins``) pairs of a backtest, each
    from the state after the series' rows before its origin: one pass from zero over each series (the carried
    state as streaming builds it), not a window a pair."""
    present = np.unique(sidx)
    x, counts = model_rows(series, meta, mean[present], std[present], present, np.zeros(len(present), np.int64))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    width = 2 * model.hidden_size if model.bidirectional else model.hidden_size
    outs = torch.empty(len(x), width)
    with torch.inference_mode():
        for k in range(len(present)):
            a, n = int(starts[k]), int(counts[k])
            outs[a:a + n] = model.encode(torch.from_numpy(x[a:a + n])[None])[0][0]
        where = starts[np.searchsorted(present, sidx)] + origins - 1  # the row before each origin
        fut = None if future is None else torch.from_numpy(np.ascontiguousarray(future, dtype=np.float32))
        return model.forecast_from(outs[torch.from_numpy(where)], fut).numpy()


def one_step(model: LSTMForecaster, x: torch.Tensor, h: torch.Tensor,
             c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``model.encode`` over one step, x (B, F) from h, c (layers, B, hidden), with PyTorch's fused LSTM cell a
    layer: the top layer's output (B, hidden) and the new h, c; None where the stack is not a plain eval-mode
    one (the caller encodes). On the CPU a sequence call of nn.LSTM costs ~0.4 ms before its first step (oneDNN
    sets the sequence up), ~4x a 2-layer cell step of hidden 64: what one new row of a series pays. Equal to
    encode to float rounding (the cell is PyTorch's native kernel, the sequence call may be oneDNN's)."""
    if model.training or model.bidirectional or model.statics.width:
        return None
    stack = list(zip(model.layers, model.projs)) if model.residual else [(model.lstm, None)]
    hs, cs, k = [], [], 0
    for lstm, proj in stack:
        if lstm.proj_size or lstm.bidirectional or lstm.weight_ih_l0.dtype != x.dtype:
            return None
        inp = x
        for layer in range(lstm.num_layers):
            hk, ck = torch.lstm_cell(inp, (h[k], c[k]), getattr(lstm, f"weight_ih_l{layer}"),
                                     getattr(lstm, f"weight_hh_l{layer}"), getattr(lstm, f"bias_ih_l{layer}", None),
                                     getattr(lstm, f"bias_hh_l{layer}", None))
            hs.append(hk)
            cs.append(ck)
            inp, k = hk, k + 1
        x = inp + proj(x) if proj is not None else inp  # a residual layer adds its input's projection
    return x, torch.stack(hs), torch.stack(cs)
