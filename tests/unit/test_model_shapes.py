"""LSTMForecaster output shapes over the architecture grid, and where the residual stack projects (model.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lstmcast.model.network import LSTMForecaster

B, L, F, H, T, HIDDEN = 5, 7, 3, 4, 2, 8


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models: threads only add OpenMP overhead (conftest restores the count)


@pytest.mark.parametrize("window_norm", ["last", "mean", "none"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_and_state_shapes(bidirectional, num_layers, residual, window_norm):
    torch.manual_seed(0)
    m = LSTMForecaster(input_size=F, n_targets=T, horizon=H, hidden_size=HIDDEN, num_layers=num_layers,
                       bidirectional=bidirectional, residual=residual, window_norm=window_norm)
    D = 2 if bidirectional else 1
    assert m.head.in_features == D * HIDDEN  # the head follows D * hidden_size
    assert m.head.out_features == H * T
    y, (h_n, c_n) = m(torch.randn(B, L, F), return_state=True)
    assert y.shape == (B, H, T)
    assert h_n.shape == c_n.shape == (num_layers * D, B, HIDDEN)
    assert torch.isfinite(y).all()
    state = m.init_hidden(B)
    assert m(torch.randn(B, L, F), state).shape == (B, H, T)  # explicit zero state is accepted


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("input_size", [3, 16])
def test_residual_stack_projects_only_where_widths_differ(bidirectional, input_size):
    hidden = 8 if bidirectional else 16  # output width 16 either way
    m = LSTMForecaster(input_size=input_size, n_targets=1, horizon=2, hidden_size=hidden, num_layers=3,
                       bidirectional=bidirectional, residual=True)
    first, *rest = m.projs
    if input_size == 16:  # same width as the LSTM output: a plain skip connection
        assert isinstance(first, nn.Identity)
    else:
        assert isinstance(first, nn.Linear) and (first.in_features, first.out_features) == (input_size, 16)
    assert all(isinstance(p, nn.Identity) for p in rest)
    assert [layer.input_size for layer in m.layers] == [input_size, 16, 16]
    assert not hasattr(m, "lstm")


def test_the_guides_example_shapes():
    # input_size 10, hidden 64, 2 layers, batch 32, 20 steps: LSTM output (32, 20, 64), bidirectional (32, 20, 128)
    uni = LSTMForecaster(input_size=10, n_targets=1, horizon=1, hidden_size=64, num_layers=2)
    bi = LSTMForecaster(input_size=10, n_targets=1, horizon=1, hidden_size=64, num_layers=2, bidirectional=True)
    x = torch.zeros(32, 20, 10)
    assert uni.lstm(x)[0].shape == (32, 20, 64)
    assert bi.lstm(x)[0].shape == (32, 20, 128)
    assert bi.head.in_features == 128
    assert bi(x).shape == (32, 1, 1)


@pytest.mark.parametrize("window_norm, expected", [("last", 4.0), ("mean", 2.5), ("none", 0.0)])
def test_window_norm_adds_the_reference_back(window_norm, expected):
    m = LSTMForecaster(input_size=2, n_targets=1, horizon=3, hidden_size=4, num_layers=1, window_norm=window_norm)
    nn.init.zeros_(m.head.weight)
    nn.init.zeros_(m.head.bias)  # the network predicts 0 change: the forecast is the reference itself
    x = torch.tensor([[[1.0, 9.0], [2.0, 9.0], [3.0, 9.0], [4.0, 9.0]]])  # target 1..4, a feature 9
    torch.testing.assert_close(m(x), torch.full((1, 3, 1), expected))
