"""The model's boundary contract (FAULTS.md M1-M3) and init_hidden."""

from __future__ import annotations

import re

import pytest
import torch

from lstmcast.errors import NotFittedError, ShapeError
from lstmcast.forecaster import Forecaster
from lstmcast.model.network import LSTMForecaster
from tests.conftest import small_config


def _model(**kw) -> LSTMForecaster:
    args = dict(input_size=3, n_targets=1, horizon=4, hidden_size=8, num_layers=2, window=96)
    args.update(kw)
    return LSTMForecaster(**args).eval()


# -- M1: x ---------------------------------------------------------------------------------------
def test_sequence_first_tensor_gets_the_transpose_fix():
    m = _model()
    x = torch.zeros(96, 32, 3)  # (L, B, F) given to the batch-first model
    msg = "expected x of shape (B, L=96, F=3), got (96, 32, 3): this looks like (L, B, F); pass x.transpose(0, 1)"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        m(x)
    assert m(x.transpose(0, 1)).shape == (32, 4, 1)


def test_one_window_without_batch_axis_gets_unsqueeze_fix():
    with pytest.raises(ShapeError, match=re.escape("got (96, 3) (2-D): this looks like one window (L, F); "
                                                   "add a batch axis: x.unsqueeze(0)")):
        _model()(torch.zeros(96, 3))


def test_univariate_batch_without_feature_axis_gets_unsqueeze_last():
    m = _model(input_size=1)
    with pytest.raises(ShapeError, match=re.escape("got (8, 96) (2-D): this looks like (B, L) without the "
                                                   "feature axis; pass x.unsqueeze(-1)")):
        m(torch.zeros(8, 96))


def test_other_ranks_are_refused():
    with pytest.raises(ShapeError, match=r"got \(2, 8, 96, 3\) \(4-D\): reshape it to \(batch, window, features\)"):
        _model()(torch.zeros(2, 8, 96, 3))


def test_features_in_the_middle_get_transpose_1_2():
    want = "got (8, 3, 96): this looks like (B, F, L); pass x.transpose(1, 2)"
    with pytest.raises(ShapeError, match=re.escape(want)):
        _model()(torch.zeros(8, 3, 96))


def test_wrong_feature_count_names_the_count():
    with pytest.raises(ShapeError, match=re.escape("expected x of shape (B, L=96, F=3), got (8, 96, 5): the last "
                                                   "axis must hold the 3 input features")):
        _model()(torch.zeros(8, 96, 5))


@pytest.mark.parametrize("length, fix", [(120, "pass the last 96: x[:, -96:]"), (50, "give 96 steps of history")])
def test_wrong_window_length_says_what_to_pass(length, fix):
    with pytest.raises(ShapeError, match=re.escape(fix)):
        _model()(torch.zeros(8, length, 3))


def test_model_without_window_accepts_any_length():
    m = _model(window=None)
    assert m(torch.zeros(2, 7, 3)).shape == (2, 4, 1)
    assert m(torch.zeros(2, 30, 3)).shape == (2, 4, 1)


def test_wrong_dtype_or_non_tensor_input():
    m = _model()
    with pytest.raises(ShapeError, match=re.escape("x has dtype torch.float64 on device cpu but the model's "
                                                   "weights are torch.float32 on cpu: pass x.to(")):
        m(torch.zeros(2, 96, 3, dtype=torch.float64))
    with pytest.raises(ShapeError, match="got list: convert it with torch.as_tensor"):
        m([[0.0] * 3] * 96)


def test_shape_error_is_a_value_error_for_user_code():
    with pytest.raises(ValueError):
        _model()(torch.zeros(96, 3))


# -- M2: h0 / c0 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional, residual", [(False, False), (True, False), (False, True), (True, True)])
def test_init_hidden_shapes_and_roundtrip(bidirectional, residual):
    m = _model(bidirectional=bidirectional, residual=residual, window=4)
    D = 2 if bidirectional else 1
    h0, c0 = m.init_hidden(5, "cpu")
    assert h0.shape == c0.shape == (2 * D, 5, 8)
    assert h0.dtype == torch.float32 and h0.device.type == "cpu"
    assert not h0.any() and not c0.any()
    x = torch.randn(5, 4, 3)
    y0 = m(x)
    y, (h_n, c_n) = m(x, (h0, c0), return_state=True)
    torch.testing.assert_close(y, y0)  # zero state == the default state
    assert h_n.shape == c_n.shape == h0.shape
    y2 = m(x, (h_n, c_n))  # carried state has the right shape to feed back
    assert y2.shape == (5, 4, 1) and not torch.allclose(y2, y0)


def test_init_hidden_dtype():
    h0, _ = _model().init_hidden(2, dtype=torch.float64)
    assert h0.dtype == torch.float64


def test_state_of_wrong_shape_names_shape_dtype_and_device():
    m = _model()
    x = torch.zeros(4, 96, 3)
    bad = torch.zeros(4, 2, 8)  # batch-first by mistake
    msg = ("h0 must be shape (2, 4, 8) (num_layers * D, B, hidden), dtype torch.float32, device cpu; got shape "
           "(4, 2, 8), dtype torch.float32, device cpu: use model.init_hidden(4, x.device)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        m(x, (bad, bad))


def test_state_of_wrong_dtype_is_named():
    m = _model()
    x = torch.zeros(4, 96, 3)
    h0, c0 = m.init_hidden(4)
    want = ("c0 must be shape (2, 4, 8) (num_layers * D, B, hidden), dtype torch.float32, device cpu; got shape "
            "(2, 4, 8), dtype torch.float64")
    with pytest.raises(ShapeError, match=re.escape(want)):
        m(x, (h0, c0.double()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_state_on_wrong_device_is_named():
    m = _model().cuda()
    x = torch.zeros(4, 96, 3, device="cuda")
    h0, c0 = m.init_hidden(4)  # cpu
    with pytest.raises(ShapeError, match="device cuda:0; got shape .* device cpu"):
        m(x, (h0, c0))


def test_state_must_be_a_pair():
    m = _model()
    x = torch.zeros(4, 96, 3)
    h0, _ = m.init_hidden(4)
    with pytest.raises(ShapeError, match=re.escape("state must be a pair (h0, c0), got Tensor")):
        m(x, h0)


# -- M3 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["predict", "backtest", "save"])
def test_methods_before_fit_raise_not_fitted(method, tmp_path):
    fc = Forecaster(small_config())
    args = (tmp_path,) if method == "save" else ()
    with pytest.raises(NotFittedError, match=rf"not fitted yet: call \.fit\(data\).* before \.{method}\(\)"):
        getattr(fc, method)(*args)
