"""ONNX export: onnxruntime + export.json alone reproduce Forecaster.predict; the CLI command; failures."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("onnxruntime")  # the `export` extra (part of `dev`)
import onnxruntime as ort
from typer.testing import CliRunner

from lstmcast import Forecaster
from lstmcast.cli import app
from lstmcast.data.calendar import CALENDAR_NAMES
from lstmcast.errors import CheckpointError
from lstmcast.export import CALENDAR_POSITIONS, check_parity, export_run
from lstmcast.model.theta import theta_forecasts
from tests.conftest import seasonal_frame, small_config

TRAIN = {"max_epochs": 2, "threads": 1}


def long_frame() -> pd.DataFrame:
    """Two series at different levels with a covariate: exercises the per-series scaler rows."""
    parts = []
    for sid, seed, shift in (("a", 1, 0.0), ("b", 2, 40.0)):
        df = seasonal_frame(300, seed=seed)
        df["y"] += shift
        df["temp"] = np.cos(np.arange(len(df)) / 5.0) * (2 if sid == "b" else 1)
        parts.append(df.assign(sid=sid))
    return pd.concat(parts, ignore_index=True)


VARIANTS = {
    "plain": (small_config(train=TRAIN), lambda: seasonal_frame(300)),
    "bidir_residual_long": (small_config(data={"id_col": "sid", "features": ["temp"]},
                                         model={"num_layers": 2, "bidirectional": True, "residual": True},
                                         train=TRAIN), long_frame),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained(request, tmp_path_factory):
    cfg, make = VARIANTS[request.param]
    df = make()
    run = tmp_path_factory.mktemp(request.param) / "run"
    fc = Forecaster(cfg).fit(df)
    fc.save(run)
    return fc, df, run


def deploy_forecast(onnx_path: Path, spec: dict, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """What a deployment without lstmcast/PyTorch does: export.json's recipe around onnxruntime."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    L, T, ids = spec["window"], spec["n_targets"], spec["scaler"]["ids"]
    groups = [("", df)] if spec["layout"] == "single" else list(df.groupby(spec["id_col"], sort=False))
    out = {}
    for sid, part in groups:
        i = 0 if spec["layout"] == "single" else ids.index(sid)
        mean, std = np.asarray(spec["scaler"]["mean"][i]), np.asarray(spec["scaler"]["std"][i])
        raw = part.sort_values(spec["time_col"])[spec["channels"]].to_numpy(np.float64)[-L:]  # (L, F)
        x = ((raw - mean) / std).astype(np.float32)[None]  # (1, L, F)
        y = sess.run([spec["output"]["name"]], {spec["input"]["name"]: x})[0][0]  # (H, T)
        out[sid] = y.astype(np.float64) * std[:T] + mean[:T]
        if "local" in spec:  # a table: combined with the series' Theta forecast, as the recipe's combine step says
            loc = spec["local"]
            hist = part.sort_values(spec["time_col"])[spec["targets"]].to_numpy(np.float64)[-loc["history_cap"]:]
            theta = theta_forecasts([hist[:, 0]], spec["horizon"], loc["season"], loc["drift"])[0]
            out[sid] = (1 - loc["weight"]) * out[sid] + loc["weight"] * theta[:, None]
    return out


def test_onnx_with_export_json_reproduces_predict(trained):
    fc, df, run = trained
    res = export_run(run)
    assert res.onnx_path == run / "model.onnx" and res.spec_path == run / "export.json"
    assert set(res.diffs) == {1, 7} and res.max_abs_diff <= 1e-4
    spec = json.loads(res.spec_path.read_text())
    assert spec["sha256"] == hashlib.sha256(res.onnx_path.read_bytes()).hexdigest() == res.sha256
    assert spec["channels"] == fc.meta_.channels and spec["opset"] == 18
    assert (spec["window"], spec["horizon"], spec["freq"]) == (fc.meta_.window, fc.meta_.horizon, "h")
    sess = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, outp.name) == ("x", "y") and isinstance(inp.shape[0], str)  # dynamic batch axis

    assert ("local" in spec) == (spec["layout"] == "long")  # a table's forecast is combined (model.local auto)
    if "local" in spec:
        assert spec["local"]["weight"] == fc.meta_.local.weight and any("combine:" in r for r in spec["recipe"])
    want = fc.predict(df)
    got = deploy_forecast(res.onnx_path, spec, df)
    for sid, y in got.items():
        rows = want if spec["layout"] == "single" else want[want[spec["id_col"]] == sid]
        np.testing.assert_allclose(y, rows[spec["targets"]].to_numpy(), atol=1e-4, rtol=0)

    # the parity check itself: a module that no longer matches the ONNX file is refused, naming the gap
    model = copy.deepcopy(fc.model_)
    with torch.no_grad():
        model.head.bias.add_(0.01)
    with pytest.raises(CheckpointError, match=r"max \|onnxruntime - torch\| = 0\.01 > 0\.0001"):
        check_parity(model, res.onnx_path.read_bytes(), fc.meta_.window)


@pytest.mark.parametrize("trained", ["plain"], indirect=True)
def test_cli_export_to_another_folder(trained, tmp_path):
    _, _, run = trained
    out = tmp_path / "deploy" / "forecaster.onnx"
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "parity with PyTorch: max |diff|" in res.output and "B=7" in res.output
    spec = json.loads((out.parent / "export.json").read_text())
    assert spec["model"] == "forecaster.onnx"
    assert spec["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_cli_export_without_onnxruntime_exits_2_with_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    res = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert res.exit_code == 2
    assert "onnxruntime" in res.output and "pip install 'lstmcast[export]'" in res.output


def test_cli_export_refuses_an_out_path_that_is_not_onnx(tmp_path):
    res = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "model.bin")])
    assert res.exit_code == 2 and "must end in .onnx" in res.output


# -- a model with every input role: known-future covariates, calendar, statics, id embedding ---------------------
H_COV = 6


def covariate_frame() -> pd.DataFrame:
    """Three hourly series: y driven by a known-future price, a past-only temp, a daily cycle and its statics."""
    rng = np.random.default_rng(3)
    parts = []
    for k, (sid, region, cap) in enumerate((("a", "north", 10.0), ("b", "south", 20.0), ("c", "north", 35.0))):
        t = np.arange(240)
        price, temp = rng.normal(size=t.size), np.cos(t / 5.0)
        y = cap + 3 * np.sin(2 * np.pi * t / 24 + k) + 2 * price + 0.5 * temp + 0.1 * rng.normal(size=t.size)
        parts.append(pd.DataFrame({"time": pd.date_range("2024-01-01", periods=t.size, freq="h"), "sid": sid, "y": y,
                                   "temp": temp, "price": price, "region": region, "capacity": cap}))
    return pd.concat(parts, ignore_index=True)


COVARIATES = small_config(data={"id_col": "sid", "features": ["temp"], "future_features": ["price"],
                                "static_features": ["region", "capacity"], "calendar": ["hour_of_day", "day_of_week"]},
                          model={"id_embedding": True, "local": "none"}, train=TRAIN)  # the ONNX output alone


@pytest.fixture(scope="module")
def covariate_run(tmp_path_factory):
    """A run trained without each series' last H rows; those rows' prices are the known future to forecast with."""
    df = covariate_frame()
    last = df.groupby("sid").cumcount(ascending=False) < H_COV
    hist, fut = df[~last].reset_index(drop=True), df[last][["time", "sid", "price"]].reset_index(drop=True)
    run = tmp_path_factory.mktemp("covariates") / "run"
    fc = Forecaster(COVARIATES).fit(hist)
    fc.save(run)
    return fc, hist, fut, run, export_run(run)


def test_every_input_is_exported_with_parity_and_listed_in_export_json(covariate_run):
    fc, _, _, run, res = covariate_run
    assert set(res.diffs) == {1, 7} and res.max_abs_diff <= 1e-4
    L, F = fc.meta_.window, fc.meta_.input_size
    assert F == 3 + 4  # y, temp, price + sin/cos of hour_of_day and day_of_week
    sess = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    got = {i.name: i.shape for i in sess.get_inputs()}
    assert list(got) == ["x", "future", "static"]
    assert all(isinstance(shape[0], str) for shape in got.values())  # one dynamic batch axis on every input
    assert [s[1:] for s in got.values()] == [[L, F], [H_COV, 1 + 4], [1 + 2]]  # static: capacity, region, id

    spec = json.loads(res.spec_path.read_text())
    inputs = {d["name"]: d for d in spec["inputs"]}
    assert [(d["name"], d["shape"], d["role"]) for d in spec["inputs"]] == [
        ("x", ["B", L, F], "past"), ("future", ["B", H_COV, 5], "known_future"), ("static", ["B", 3], "static")]
    cal = ["hour_of_day_sin", "hour_of_day_cos", "day_of_week_sin", "day_of_week_cos"]
    assert inputs["x"]["parts"] == {"targets": ["y"], "past_features": ["temp"], "future_features": ["price"],
                                    "calendar": cal}
    assert inputs["x"]["channels"] == ["y", "temp", "price", *cal]
    assert inputs["future"]["channels"] == ["price", *cal]
    assert any("scaled with the series' scaler" in e for e in inputs["future"]["encoding"])
    assert spec["calendar"]["features"] == ["hour_of_day", "day_of_week"]
    assert "sin(2 pi p), cos(2 pi p)" in spec["calendar"]["encoding"]
    assert spec["calendar"]["positions"]["day_of_week"] == "weekday / 7, Monday = 0"
    assert set(CALENDAR_POSITIONS) == set(CALENDAR_NAMES)  # every calendar feature a run can hold is described
    meta_inputs = fc.meta_.inputs_dict()
    capacity, region, sid = inputs["static"]["columns"]
    assert (capacity["name"], capacity["kind"], capacity["mean"], capacity["std"]) == (
        "capacity", "numeric", meta_inputs["static_mean"][0], meta_inputs["static_std"][0])
    assert (region["kind"], region["vocabulary"], region["unknown_code"]) == ("categorical", ["north", "south"], 0)
    assert (sid["name"], sid["kind"], sid["vocabulary"]) == ("sid", "series_id", ["a", "b", "c"])
    assert spec["input"] == {"name": "x", "shape": ["B", L, F], "dtype": "float32"}
    assert any(step.startswith("run: y = model(x, future, static)") for step in spec["recipe"])


def _cycle(p: np.ndarray) -> np.ndarray:
    return np.stack([np.sin(2 * np.pi * p), np.cos(2 * np.pi * p)], axis=-1)


def deploy_inputs(spec: dict, hist: pd.DataFrame, fut: pd.DataFrame, sid: str) -> dict[str, np.ndarray]:
    """x, future and static of one series from export.json alone (calendar positions computed here by hand)."""
    inputs = {d["name"]: d for d in spec["inputs"]}
    i, L = spec["scaler"]["ids"].index(sid), spec["window"]
    mean, std = np.asarray(spec["scaler"]["mean"][i]), np.asarray(spec["scaler"]["std"][i])

    def calendar(times: pd.Series) -> np.ndarray:  # hour_of_day, day_of_week (the spec's positions)
        t = pd.DatetimeIndex(times)
        return np.concatenate([_cycle((t.hour + t.minute / 60) / 24), _cycle(t.day_of_week / 7)], axis=1)
    past = hist[hist["sid"] == sid].sort_values("time").tail(L)
    x = np.concatenate([(past[spec["channels"]].to_numpy() - mean) / std, calendar(past["time"])], axis=1)
    ahead = fut[fut["sid"] == sid].sort_values("time")
    names = inputs["future"]["parts"]["future_features"]
    j = [spec["channels"].index(n) for n in names]
    future = np.concatenate([(ahead[names].to_numpy() - mean[j]) / std[j], calendar(ahead["time"])], axis=1)
    row = past.iloc[-1]
    static = []
    for col in inputs["static"]["columns"]:
        if col["kind"] == "numeric":
            static.append((row[col["name"]] - col["mean"]) / col["std"])
        else:
            value = sid if col["kind"] == "series_id" else row[col["name"]]
            static.append(col["vocabulary"].index(value) + 1 if value in col["vocabulary"] else 0)
    return {"x": x[None].astype(np.float32), "future": future[None].astype(np.float32),
            "static": np.asarray(static, dtype=np.float32)[None]}


def test_onnx_runtime_reproduces_predict_in_scaled_units_from_hand_built_inputs(covariate_run):
    fc, hist, fut, _, res = covariate_run
    spec = json.loads(res.spec_path.read_text())
    sess = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    want = fc.predict(hist, future=fut)
    for i, sid in enumerate(spec["scaler"]["ids"]):
        feed = deploy_inputs(spec, hist, fut, sid)
        y = sess.run(["y"], feed)[0][0]  # (H, T) scaled
        mean, std = spec["scaler"]["mean"][i][0], spec["scaler"]["std"][i][0]
        expected = (want[want["sid"] == sid]["y"].to_numpy() - mean) / std
        np.testing.assert_allclose(y[:, 0], expected, atol=1e-4, rtol=0)
        # the known future and the statics reach the output: change them and the forecast moves
        moved = {**feed, "future": feed["future"] + np.float32(1.0)}
        assert np.abs(sess.run(["y"], moved)[0][0] - y).max() > 1e-4
        other = feed["static"].copy()
        other[0, -1] = 0.0  # the series-id code: as a series never seen
        assert np.abs(sess.run(["y"], {**feed, "static": other})[0][0] - y).max() > 1e-6


def test_the_parity_check_feeds_every_input(covariate_run):
    """A module that differs from the ONNX file only where the future input or a categorical code enters is caught:
    the parity inputs are random over every input (valid codes included), not zeros."""
    from lstmcast.export import sample_inputs

    fc, _, _, _, res = covariate_run
    onnx_bytes, L = res.onnx_path.read_bytes(), fc.meta_.window
    width = fc.model_.num_directions * fc.model_.hidden_size
    for change in ("future", "embedding"):
        model = copy.deepcopy(fc.model_)
        with torch.no_grad():
            if change == "future":  # the decoder's weights on the K known-future inputs
                model.decoder.net[0].weight[:, width:width + model.future_size] += 0.05
            else:  # the region embedding's rows for the codes of real values (row 0, unknown, stays 0)
                model.statics.embeddings[0].weight[1:] += 0.05
        with pytest.raises(CheckpointError, match="ONNX parity check failed"):
            check_parity(model, onnx_bytes, L)
    batch = sample_inputs(fc.model_, L, 500, np.random.default_rng(0))
    codes = batch["static"][:, fc.model_.static_size:].numpy()
    assert np.array_equal(codes, np.round(codes))
    for k, card in enumerate(fc.model_.static_cardinalities):
        assert set(np.unique(codes[:, k]).astype(int)) == set(range(card))


@pytest.mark.parametrize("trained", ["bidir_residual_long"], indirect=True)
def test_a_model_without_extra_inputs_lists_x_alone(trained):
    fc, _, run = trained
    spec = json.loads(export_run(run).spec_path.read_text())
    (x,) = spec["inputs"]
    assert (x["name"], x["shape"], x["role"]) == ("x", ["B", fc.meta_.window, 2], "past")
    assert x["parts"] == {"targets": ["y"], "past_features": ["temp"], "future_features": [], "calendar": []}
    assert "calendar" not in spec and len(spec["recipe"]) == 5 + ("local" in spec)  # + the combine step


def test_a_stateful_run_is_refused_before_anything_is_written(tmp_path):
    """The ONNX graph is the window forward from a zero state; a stateful model forecasts from each series' carried
    state, so an export would silently give other forecasts than `lstmcast predict`."""
    cfg = small_config(model={"stateful": True, "hidden_size": 8, "num_layers": 1},
                       train={"max_epochs": 1, "max_steps_per_epoch": 2, "precision": "fp32", "accel": "eager"})
    run = tmp_path / "run"
    Forecaster(cfg).fit(seasonal_frame(200), progress=False).save(run)
    res = CliRunner().invoke(app, ["export", str(run)])
    assert res.exit_code == 2, res.output
    assert "stateful model" in res.output and "model.stateful: false" in res.output
    assert not (run / "model.onnx").exists() and not (run / "export.json").exists()
