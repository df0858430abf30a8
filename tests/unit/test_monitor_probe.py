"""The probe's plain-maths LSTM replay must reproduce nn.LSTM, and its statistics must mean what they say."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstmcast.model.network import LSTMForecaster
from lstmcast.training.probe import probe_model, recompute_lstm

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors: extra OpenMP threads only spin (conftest restores the count)


LSTM_CASES = [
    dict(num_layers=1),
    dict(num_layers=2),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, bias=False),
    dict(num_layers=2, proj_size=3),
    dict(num_layers=2, bidirectional=True, batch_first=False),
]


@pytest.mark.parametrize("fast", [False, True], ids=["free-running", "fast"])
@pytest.mark.parametrize("kw", LSTM_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_recompute_reproduces_nn_lstm(kw, fast):
    torch.manual_seed(0)
    kw = {"batch_first": True, **kw}
    lstm = nn.LSTM(3, 8, **kw).eval()
    x = torch.randn(5, 12, 3) if kw["batch_first"] else torch.randn(12, 5, 3)
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x)
    out_re, h_re, c_re, layers = recompute_lstm(lstm, x, fast=fast)
    assert h_re.shape == h_n.shape and c_re.shape == c_n.shape and out_re.shape == out.shape
    torch.testing.assert_close(h_re, h_n, atol=1e-5, rtol=0)
    torch.testing.assert_close(c_re, c_n, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_re, out, atol=1e-5, rtol=0)
    assert len(layers) == kw["num_layers"]


@pytest.mark.parametrize("kw", [dict(), dict(residual=True), dict(bidirectional=True),
                                dict(residual=True, bidirectional=True, num_layers=3), dict(window_norm="mean")],
                         ids=["plain", "residual", "bidirectional", "residual-bidirectional-3", "window-norm-mean"])
def test_probe_reproduces_the_models_own_state(kw):
    """window_norm, residual projections and stacking come from the model's forward, not a re-implementation."""
    torch.manual_seed(0)
    m = LSTMForecaster(input_size=2, n_targets=1, horizon=3, hidden_size=8, **{"num_layers": 2, **kw}, window=10)
    x = torch.randn(6, 10, 2) + 5.0  # an offset that window_norm removes: a missed preprocessing would show
    with torch.no_grad():
        _, (h_n, c_n) = m.eval()(x, return_state=True)
    probe = probe_model(m, x)
    assert probe.recompute_error < 1e-5
    torch.testing.assert_close(torch.cat([p.h_n for p in probe.layers]), h_n, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([p.c_n for p in probe.layers]), c_n, atol=1e-5, rtol=0)
    assert [p.units for p in probe.layers] == [8 * m.num_directions] * m.num_layers


def test_probe_changes_nothing_in_the_model_and_gives_the_eval_gradients():
    torch.manual_seed(0)
    m = LSTMForecaster(input_size=1, n_targets=1, horizon=2, hidden_size=6, num_layers=2, dropout=0.3, window=8)
    m.train()
    x, y = torch.randn(4, 8, 1), torch.randn(4, 2, 1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    probe = probe_model(m, x, y, F.mse_loss)
    assert m.training  # mode restored
    assert torch.equal(torch.get_rng_state(), rng)  # no dropout mask drawn
    assert all(p.grad is None for p in m.parameters())
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    m.eval()
    F.mse_loss(m(x), y).backward()
    assert set(probe.grads) == {n for n, _ in m.named_parameters()}
    for name, p in m.named_parameters():
        torch.testing.assert_close(probe.grads[name], p.grad)


def test_gate_statistics_see_saturated_forget_gates_and_dead_units():
    torch.manual_seed(0)
    lstm = nn.LSTM(2, 4, 2, batch_first=True).eval()
    H = 4
    with torch.no_grad():
        lstm.bias_ih_l0[H:2 * H] = 20.0  # layer 1: forget gate pinned at 1
        lstm.bias_ih_l1[3 * H:] = -40.0  # layer 2: output gate shut -> h = 0 everywhere: every unit dead
    _, _, _, layers = recompute_lstm(lstm, torch.randn(8, 10, 2))
    assert layers[0].gate_saturated["forget"] == pytest.approx(1.0)
    assert layers[0].gate_mean["forget"] > 0.99
    assert layers[0].dead_units == 0
    assert layers[1].dead_units == layers[1].units == 4
    assert layers[1].gate_saturated["output"] == pytest.approx(1.0)
    assert 0.0 < layers[1].gate_mean["input"] < 1.0
