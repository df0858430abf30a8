"""The doctor's arithmetic: shape trace, parameter counts, memory and FLOPs, against real PyTorch."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstmcast.doctor.report import doctor
from lstmcast.model.estimate import Dims, flops_per_step, layer_counts, memory_bytes, n_parameters, trace
from lstmcast.model.network import LSTMForecaster


def guide_config(**model) -> dict:
    """The guide's example: input_size=10 (1 target + 9 features), hidden 64, 2 layers, batch 32, 20 steps."""
    return {"data": {"target": "y", "features": [f"x{i}" for i in range(9)], "window": 20, "horizon": 1},
            "model": {"hidden_size": 64, "num_layers": 2, **model}, "train": {"batch_size": 32}}


GOLDEN = [
    ("input x", (32, 20, 10), "(B, L, F)"),
    ("h0, c0", (2, 32, 64), "(num_layers * D, B, hidden)"),
    ("lstm output", (32, 20, 64), "(B, L, D * hidden)"),
    ("h_n, c_n", (2, 32, 64), "(num_layers * D, B, hidden)"),
    ("head input", (32, 64), "(B, D * hidden)"),
    ("head output", (32, 1), "(B, H * T)"),
    ("forecast y", (32, 1, 1), "(B, H, T)"),
]


def test_golden_trace_of_the_guides_example():
    rep = doctor(guide_config())
    assert [(r.name, r.shape, r.legend) for r in rep.trace] == GOLDEN
    assert rep.trace[0].note.startswith("batch_first=True")
    assert rep.as_dict()["batch_first"] is True
    assert rep.n_parameters == 19456 + 33280 + 65 + 20  # + the linear skip, Linear(L=20, H=1)
    assert [(c.name, c.params) for c in rep.layers] == [("lstm layer 1", 19456), ("lstm layer 2", 33280),
                                                          ("head", 65), ("linear skip", 20)]
    assert rep.train_windows is None and rep.windows_per_parameter is None  # config only
    assert rep.ok


def test_golden_trace_bidirectional():
    rep = doctor(guide_config(bidirectional=True))
    assert rep.shape("lstm output") == (32, 20, 128)
    assert rep.shape("h0, c0") == rep.shape("h_n, c_n") == (4, 32, 64)
    assert rep.shape("head input") == (32, 128)
    assert "++ backward state at step 0" in rep.trace[4].note


def test_residual_trace_shows_the_projection():
    rep = doctor(guide_config(residual=True))
    assert rep.shape("residual projection") == (32, 20, 64)
    assert ("projection 1", 640) in [(c.name, c.params) for c in rep.layers]


@pytest.mark.parametrize("bidirectional, residual", [(False, False), (True, False), (False, True), (True, True)])
def test_trace_matches_a_real_forward_pass(bidirectional, residual):
    d = Dims(B=5, L=7, H=3, F=4, T=2, D=2 if bidirectional else 1, hidden=6, layers=3, residual=residual)
    model = LSTMForecaster(d.F, d.T, d.H, d.hidden, d.layers, 0.0, bidirectional, residual, window=d.L)
    seen = {}
    lstm = model.layers[-1] if residual else model.lstm
    lstm.register_forward_hook(lambda m, i, o: seen.update(out=tuple(o[0].shape)))
    model.head.register_forward_hook(lambda m, i, o: seen.update(head_in=tuple(i[0].shape), head_out=tuple(o.shape)))
    x = torch.zeros(d.B, d.L, d.F)
    h0, c0 = model.init_hidden(d.B)
    y, (h_n, c_n) = model(x, (h0, c0), return_state=True)
    rows = {r.name: r.shape for r in trace(d)}
    assert rows["input x"] == tuple(x.shape)
    assert rows["h0, c0"] == tuple(h0.shape) == tuple(h_n.shape) == tuple(c_n.shape)
    assert rows["h_n, c_n"] == tuple(h_n.shape)
    assert rows["lstm output"] == seen["out"]
    assert rows["head input"] == seen["head_in"]
    assert rows["head output"] == seen["head_out"]
    assert rows["forecast y"] == tuple(y.shape)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(F=st.integers(1, 12), T=st.integers(1, 3), H=st.integers(1, 8), hidden=st.integers(1, 40),
       layers=st.integers(1, 4), bidirectional=st.booleans(), residual=st.booleans(), bias=st.booleans())
def test_parameter_count_equals_pytorch(F, T, H, hidden, layers, bidirectional, residual, bias):
    T = min(T, F)
    model = LSTMForecaster(F, T, H, hidden, layers, 0.0, bidirectional, residual, bias)
    d = Dims(B=1, L=1, H=H, F=F, T=T, D=2 if bidirectional else 1, hidden=hidden, layers=layers,
             residual=residual, bias=bias)
    assert n_parameters(d) == sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    assert layer_counts(d)[-1].params == head


def test_report_total_equals_the_model_fit_builds(tmp_path):
    from tests.conftest import seasonal_frame, small_config

    cfg = small_config(model={"hidden_size": 12, "num_layers": 2, "dropout": 0.1, "bidirectional": True},
                       data={"features": "z"})
    df = seasonal_frame(200)
    df["z"] = df["y"].shift(1).bfill()
    rep = doctor(cfg, df)
    model = LSTMForecaster(input_size=2, n_targets=1, horizon=6, hidden_size=12, num_layers=2, bidirectional=True,
                           window=24, linear_skip=True)  # the default linear skip counts too
    assert rep.n_parameters == sum(p.numel() for p in model.parameters())
    assert rep.dims.F == 2 and rep.dims.L == 24
    assert rep.train_windows and rep.val_windows
    assert rep.windows_per_parameter == pytest.approx(rep.train_windows / rep.n_parameters)
    assert rep.series_bytes == 200 * 2 * 4


def test_flops_by_hand_for_the_guides_example():
    d = Dims(B=32, L=20, H=1, F=10, T=1, D=1, hidden=64, layers=2)
    layer1 = 2 * 32 * 20 * 4 * 64 * (10 + 64)
    layer2 = 2 * 32 * 20 * 4 * 64 * (64 + 64)
    head = 2 * 32 * 64 * 1
    assert flops_per_step(d) == 3 * (layer1 + layer2 + head)
    assert flops_per_step(Dims(**{**d.__dict__, "D": 2})) > 2 * flops_per_step(d) * 0.99


def test_memory_estimate_parts_and_precisions():
    d = Dims(B=32, L=20, H=1, F=10, T=1, D=1, hidden=64, layers=2)
    P = n_parameters(d)
    fp32, bf16 = memory_bytes(d, P, 4), memory_bytes(d, P, 2)
    acts = 32 * 64 + 32 + 32 * 20 * (10 + 6 * 64) + 32 * 20 * (64 + 6 * 64)
    assert fp32 == 16 * P + 4 * 32 * (20 * 10 + 1) + 4 * acts
    assert fp32 - bf16 == 2 * acts
    assert memory_bytes(Dims(**{**d.__dict__, "B": 64}), P, 4) > fp32


def test_measure_times_the_real_step():
    rep = doctor({"data": {"target": "y", "window": 8, "horizon": 2},
                  "model": {"hidden_size": 8, "num_layers": 1, "dropout": 0.0},
                  "train": {"batch_size": 8, "threads": 1}}, measure=True)
    assert rep.step_seconds is not None and 0 < rep.step_seconds < 5
    assert doctor(guide_config()).step_seconds is None


def test_as_dict_is_json_and_complete():
    data = json.loads(json.dumps(doctor(guide_config()).as_dict()))
    assert data["parameters"]["total"] == sum(layer["params"] for layer in data["parameters"]["layers"])
    assert data["trace"][2] == {"name": "lstm output", "shape": [32, 20, 64], "legend": "(B, L, D * hidden)",
                                "note": ""}
    assert set(data["memory_bytes"]) == {"fp32", "bf16"}
    assert data["ok"] is True and data["device"] == "cpu"


def test_config_only_counts_targets_and_features_and_auto_window():
    rep = doctor({"data": {"target": ["a", "b"], "features": ["c"], "horizon": 12, "season": 24}})
    assert (rep.dims.F, rep.dims.T, rep.dims.L) == (3, 2, 48)
    wide = doctor({"data": {"target": ["a", "b"], "format": "wide", "features": ["c"]}})
    assert (wide.dims.F, wide.dims.T) == (2, 1)


def test_structural_config_errors_still_raise():
    from lstmcast.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown key 'model.hiden_size' \(did you mean 'model.hidden_size'\?\)"):
        doctor({"model": {"hiden_size": 3}})


def test_measure_warms_up_and_reports_median_and_spread(monkeypatch):
    """doctor --measure varied 75x across runs (one-off first-step costs timed): the slow first steps fall in the
    warm-up, and the report gives the median of several steps with their spread."""
    import time as _time

    from lstmcast.doctor.report import render
    from lstmcast.training.loop import Trainer

    real, calls = Trainer.train_step, []

    def first_slow(self, batch):  # the one-off costs of the first steps (kernel choice, allocation)
        calls.append(1)
        if len(calls) <= 4:
            _time.sleep(0.2)
        return real(self, batch)

    monkeypatch.setattr(Trainer, "train_step", first_slow)
    rep = doctor({"data": {"target": "y", "window": 8, "horizon": 2},
                  "model": {"hidden_size": 8, "num_layers": 1, "dropout": 0.0},
                  "train": {"batch_size": 8, "threads": 1}}, measure=True)
    assert rep.step_samples >= 5 and rep.step_spread is not None
    lo, hi = rep.step_spread
    assert lo <= rep.step_seconds <= hi < 0.2  # none of the slow first steps was timed
    budget = render(rep)[2]
    text = " ".join(str(c) for col in budget.columns for c in col._cells)
    assert f"median of {rep.step_samples} steps after a warm-up (10-90%:" in text
    assert json.loads(json.dumps(rep.as_dict()))["step_spread"] == [lo, hi]
