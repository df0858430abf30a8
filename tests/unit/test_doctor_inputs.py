"""The doctor's shape trace with every input role: past x broken down, known-future, static and its encoding, the
decoder; parameter counts equal to the model fit builds (issue #12 item 6)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstmcast.config import validate_config
from lstmcast.doctor.report import doctor
from lstmcast.model.build import build_model
from lstmcast.model.estimate import Dims, embedding_dim, n_parameters, trace
from lstmcast.model.network import LSTMForecaster

H, L = 6, 24


def frame() -> pd.DataFrame:
    """Three hourly series with a past feature, a known-future one and two statics (region text, capacity number)."""
    rng = np.random.default_rng(0)
    parts = []
    for k, (sid, region, cap) in enumerate((("a", "north", 10.0), ("b", "south", 20.0), ("c", "east", 35.0))):
        t = np.arange(240)
        price = rng.normal(size=t.size)
        y = cap + 3 * np.sin(2 * np.pi * t / 24 + k) + 2 * price + 0.1 * rng.normal(size=t.size)
        parts.append(pd.DataFrame({"time": pd.date_range("2024-01-01", periods=t.size, freq="h"), "sid": sid, "y": y,
                                   "temp": np.cos(t / 5.0), "price": price, "region": region, "capacity": cap}))
    return pd.concat(parts, ignore_index=True)


def config(**model) -> dict:
    return {"data": {"time_col": "time", "id_col": "sid", "target": "y", "features": ["temp"],
                     "future_features": ["price"], "static_features": ["region", "capacity"],
                     "calendar": ["hour_of_day", "day_of_week"], "horizon": H, "window": L},
            "model": {"hidden_size": 16, "num_layers": 1, "dropout": 0.0, "id_embedding": True, **model},
            "train": {"batch_size": 32, "threads": 1}}


def built_like_fit(cfg_dict: dict, df: pd.DataFrame) -> LSTMForecaster:
    """The model Forecaster.fit builds: prepare, resolve_config, build_model(**InputSpec.model_sizes())."""
    from lstmcast.data.load import load_series
    from lstmcast.data.prepare import prepare
    from lstmcast.training.fit import resolve_config

    cfg = validate_config(cfg_dict)
    prep = prepare(load_series(df, cfg), cfg.data, "fp32", cfg.model.id_embedding)
    resolved = resolve_config(cfg, prep, df)
    return build_model(resolved.model, prep.scaled.shape[1], prep.series.n_targets, prep.horizon, prep.window,
                       **prep.inputs.model_sizes())


def test_trace_shows_each_input_role_with_its_shape():
    rep = doctor(config(), frame())
    S_enc = 1 + embedding_dim(4) + embedding_dim(4)  # capacity + region (3 values + unknown) + id (3 + unknown)
    assert [(r.name, r.shape, r.legend) for r in rep.trace] == [
        ("input x", (32, L, 7), "(B, L, F)"),
        ("input future", (32, H, 5), "(B, H, K)"),
        ("input static", (32, 3), "(B, S)"),
        ("static encoding", (32, S_enc), "(B, S')"),
        ("encoder input", (32, L, 7 + S_enc), "(B, L, F + S')"),
        ("h0, c0", (1, 32, 16), "(num_layers * D, B, hidden)"),
        ("lstm output", (32, L, 16), "(B, L, D * hidden)"),
        ("h_n, c_n", (1, 32, 16), "(num_layers * D, B, hidden)"),
        ("head input", (32, 16), "(B, D * hidden)"),
        ("head output", (32, H), "(B, H * T)"),
        ("decoder input", (32, H, 16 + 5 + S_enc + 8), "(B, H, D * hidden + K + S' + 8)"),
        ("decoder output", (32, H, 1), "(B, H, T)"),
        ("forecast y", (32, H, 1), "(B, H, T)"),
    ]
    notes = {r.name: r.note for r in rep.trace}
    assert notes["input x"].endswith("F = 1 target + 1 past feature + 1 future feature + 4 calendar channels "
                                     "(hour_of_day, day_of_week: sin, cos)")
    assert notes["input future"].startswith("K = 1 future feature + 4 calendar channels")
    assert notes["input static"] == "per series: S = 1 numeric + 2 categorical codes (region, series id)"
    assert "region Embedding(4, 3) + series id Embedding(4, 3)" in notes["static encoding"]
    assert "added to the head's forecast" in notes["decoder output"] and "+ decoder output" in notes["forecast y"]
    assert (rep.dims.K, rep.dims.S, rep.dims.cards) == (5, 1, (4, 4))
    assert json.loads(json.dumps(rep.as_dict()))["dims"]["cards"] == [4, 4]  # the --json output


@pytest.mark.parametrize("model", [{}, {"hidden_size": "auto", "num_layers": 2, "dropout": "auto",
                                        "residual": True, "bidirectional": True, "levels": [80]}])
def test_parameter_count_equals_the_model_fit_builds(model):
    rep = doctor(config(**model), frame())
    built = built_like_fit(config(**model), frame())
    assert rep.n_parameters == sum(p.numel() for p in built.parameters())
    assert rep.dims.hidden == built.hidden_size and rep.dims.F == built.input_size
    named = {c.name: c.params for c in rep.layers}
    assert named["static embedding region"] == built.statics.embeddings[0].weight.numel()
    assert named["decoder layer 1"] == sum(p.numel() for p in built.decoder.net[0].parameters())


def test_config_alone_shows_the_roles_it_can_know():
    rep = doctor({**config(), "data": {**config()["data"], "freq": "h"}})
    assert rep.source.startswith("config only") and "need the data" in rep.source
    assert rep.shape("input x") == (32, L, 3 + 4)  # y, temp, price + the calendar's sin/cos
    assert rep.shape("input future") == (32, H, 5)
    assert rep.shape("input static") == (32, 2)  # both statics counted as numeric without the data
    plain = doctor({"data": {"target": "y", "features": ["a"], "window": L, "horizon": H}})
    assert [r.name for r in plain.trace if r.name.startswith(("input", "decoder", "static"))] == ["input x"]


def test_measure_runs_the_real_step_with_every_input():
    rep = doctor(config(), frame(), measure=True)
    assert rep.step_seconds is not None and 0 < rep.step_seconds < 5


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(K=st.integers(0, 4), S=st.integers(0, 3), cards=st.lists(st.integers(2, 60), max_size=3),
       bidirectional=st.booleans(), residual=st.booleans(), layers=st.integers(1, 2), hidden=st.integers(2, 12))
def test_trace_and_count_match_a_real_forward_pass(K, S, cards, bidirectional, residual, layers, hidden):
    F, T = 3 + K, 1
    d = Dims(B=5, L=7, H=3, F=F, T=T, D=2 if bidirectional else 1, hidden=hidden, layers=layers,
             residual=residual, K=K, S=S, cards=tuple(cards))
    model = LSTMForecaster(F, T, d.H, hidden, layers, 0.0, bidirectional, residual, window=d.L, future_size=K,
                           static_size=S, static_cardinalities=tuple(cards))
    assert n_parameters(d) == sum(p.numel() for p in model.parameters())
    seen: dict[str, tuple[int, ...]] = {}
    first = model.layers[0] if residual else model.lstm
    first.register_forward_hook(lambda m, i, o: seen.update(enc=tuple(i[0].shape)))
    if model.statics.width:
        model.statics.register_forward_hook(lambda m, i, o: seen.update(senc=tuple(o.shape)))
    if model.decoder is not None:
        model.decoder.net[0].register_forward_hook(lambda m, i, o: seen.update(dec_in=tuple(i[0].shape)))
        model.decoder.register_forward_hook(lambda m, i, o: seen.update(dec_out=tuple(o.shape)))
    rows = {r.name: r.shape for r in trace(d)}
    future = torch.randn(rows["input future"]) if "input future" in rows else None
    static = None
    if "input static" in rows:
        static = torch.cat([torch.randn(d.B, S)] + [torch.randint(0, c, (d.B, 1)).float() for c in cards], dim=1)
        assert tuple(static.shape) == rows["input static"]
    y = model(torch.randn(rows["input x"]), future=future, static=static)
    assert rows["forecast y"] == tuple(y.shape)
    assert rows.get("encoder input", rows["input x"]) == seen["enc"]
    assert rows.get("static encoding") == seen.get("senc")
    assert rows.get("decoder input") == seen.get("dec_in") and rows.get("decoder output") == seen.get("dec_out")
