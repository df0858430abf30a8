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
import onnxruntime as ort  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from lstmcast import Forecaster  # noqa: E402
from lstmcast.cli import app  # noqa: E402
from lstmcast.errors import CheckpointError  # noqa: E402
from lstmcast.export import check_parity, export_run  # noqa: E402
from tests.conftest import seasonal_frame, small_config  # noqa: E402

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
