"""Prediction intervals end to end: model.levels through fit, predict, backtest, save/load and ONNX export."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster
from lstmcast.errors import CheckpointError
from tests.conftest import seasonal_frame, small_config

LEVELS = [80, 95]
INTERVAL_KEYS = {"coverage_80", "width_80", "interval_score_80", "coverage_95", "width_95", "interval_score_95",
                 "pinball"}


def _config(**model):
    cfg = small_config(model={"hidden_size": 8, "num_layers": 1, "dropout": 0.0, **model})
    cfg["train"].update(max_epochs=1)
    return cfg


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    df = seasonal_frame(300, noise=0.5)
    fc = Forecaster(_config(levels=LEVELS)).fit(df)
    run = tmp_path_factory.mktemp("intervals") / "run"
    fc.save(run)
    return fc, df, run


def test_predict_writes_median_and_interval_columns(fitted):
    fc, df, _ = fitted
    out = fc.predict(df)
    assert list(out.columns) == ["time", "y", "y_lo_80", "y_hi_80", "y_lo_95", "y_hi_95"]
    assert (out["y_lo_95"] <= out["y_lo_80"]).all() and (out["y_lo_80"] <= out["y"]).all()
    assert (out["y"] <= out["y_hi_80"]).all() and (out["y_hi_80"] <= out["y_hi_95"]).all()


def test_calibration_offsets_are_stored_and_reproduced_after_load(fitted):
    fc, df, run = fitted
    iv = fc.meta_.intervals
    assert iv["levels"] == LEVELS and iv["quantiles"] == [0.025, 0.1, 0.5, 0.9, 0.975]
    assert iv["calibration"] == "conformal" and np.shape(iv["offsets"]) == (2, 6, 1)
    # interval_method auto: both methods scored on the calibration windows, the lower score kept
    scores = iv["method_scores"]
    assert set(scores) == {"quantile", "residual"} and iv["method"] == min(scores, key=scores.get)
    assert iv["calibration_windows"] == len(fc.prepared_.index.val)  # the validation windows, not the test
    assert 0 < iv["training_windows"] <= len(fc.prepared_.index.train)  # plus the training windows
    loaded = Forecaster.load(run)
    pd.testing.assert_frame_equal(loaded.predict(df), fc.predict(df))


def test_backtest_scores_intervals_for_the_model_and_seasonal_naive(fitted):
    fc, df, _ = fitted
    m = fc.backtest(df)
    assert set(m["model"]) == {"MAE", "RMSE", "sMAPE", "MASE"} | INTERVAL_KEYS
    assert set(m["seasonal_naive"]) == {"MAE", "RMSE", "sMAPE", "MASE"} | INTERVAL_KEYS
    assert set(m["naive"]) == {"MAE", "RMSE", "sMAPE", "MASE"}
    for row in (m["model"], m["seasonal_naive"]):
        assert 0 <= row["coverage_80"] <= row["coverage_95"] <= 1
        assert 0 < row["width_80"] < row["width_95"] <= row["interval_score_95"]
    # the median is the point forecast the point metrics score
    q = fc.backtest_.quantiles["model"]
    np.testing.assert_array_equal(q[..., 2], fc.backtest_.forecasts["model"])


def test_calibration_none_keeps_the_raw_quantiles():
    fc = Forecaster(_config(levels=[80], calibration="none")).fit(seasonal_frame(300, noise=0.5))
    assert fc.meta_.intervals["offsets"] is None and fc.meta_.intervals["calibration"] == "none"
    assert list(fc.predict().columns) == ["time", "y", "y_lo_80", "y_hi_80"]


def test_point_model_outputs_and_metrics_unchanged():
    df = seasonal_frame(300, noise=0.5)
    fc = Forecaster(_config()).fit(df)
    same = Forecaster(_config(levels=[])).fit(df)
    assert "intervals" not in fc.meta_
    assert list(fc.model_.state_dict()) == list(same.model_.state_dict())
    pd.testing.assert_frame_equal(fc.predict(df), same.predict(df))
    assert list(fc.predict(df).columns) == ["time", "y"]
    assert fc.backtest(df) == same.backtest(df)
    assert set(fc.backtest(df)["model"]) == {"MAE", "RMSE", "sMAPE", "MASE"}


def _rehashed_copy(run, copy, edit):
    """A copy of ``run`` whose meta.json "intervals" ``edit`` changed, the manifest's hash recomputed (T12)."""
    import shutil

    from lstmcast.run.manifest import sha256_bytes

    shutil.copytree(run, copy)
    meta = json.loads((copy / "meta.json").read_text())
    edit(meta["intervals"])
    data = json.dumps(meta).encode()
    (copy / "meta.json").write_bytes(data)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["sha256"]["meta.json"] = sha256_bytes(data)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_edited_interval_offsets_are_refused_on_load(fitted, tmp_path):
    """FAULTS T12: a re-hashed meta.json edit must not load; here the offsets lose their horizon axis."""
    _, _, run = fitted
    copy = _rehashed_copy(run, tmp_path / "run", lambda iv: iv.update(offsets=[[[0.1]], [[0.2]]]))
    with pytest.raises(CheckpointError, match=r"intervals.offsets must be 2 x 6 x 1"):
        Forecaster.load(copy)


def test_onnx_export_outputs_quantiles_with_parity(fitted):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    from lstmcast.export import export_run
    from lstmcast.model.quantiles import calibrated

    fc, df, run = fitted
    res = export_run(run)
    assert res.max_abs_diff <= 1e-4
    spec = json.loads(res.spec_path.read_text())
    assert spec["output"]["shape"] == ["B", 6, 1, 5]
    assert spec["intervals"]["quantiles"] == [0.025, 0.1, 0.5, 0.9, 0.975]
    assert spec["intervals"]["offsets"] == fc.meta_.intervals["offsets"]
    # a deployment following export.json reproduces predict's intervals
    mean, std = np.asarray(spec["scaler"]["mean"][0]), np.asarray(spec["scaler"]["std"][0])
    raw = df[spec["channels"]].to_numpy(np.float64)[-spec["window"]:]
    x = ((raw - mean) / std).astype(np.float32)[None]
    y = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    q = calibrated(y, spec["intervals"], mean[:1, None], std[:1, None])[0, :, 0]  # (H, Q)
    want = fc.predict(df)
    np.testing.assert_allclose(q[:, 2], want["y"], atol=1e-4)
    np.testing.assert_allclose(q[:, 0], want["y_lo_95"], atol=1e-4)
    np.testing.assert_allclose(q[:, 3], want["y_hi_80"], atol=1e-4)


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    df = seasonal_frame(300, noise=0.5)
    fc = Forecaster(_config(levels=LEVELS, interval_method="residual")).fit(df)
    run = tmp_path_factory.mktemp("residual") / "run"
    fc.save(run)
    return fc, df, run


def test_residual_intervals_are_centred_on_the_median_and_survive_save_load(residual):
    fc, df, run = residual
    iv = fc.meta_.intervals
    assert iv["method"] == "residual" and iv["method_scores"] is None
    off = np.asarray(iv["offsets"])
    assert off.shape == (2, 6, 1) and (off[1] >= off[0]).all() and (off[0] > 0).all()
    out = fc.predict(df)
    for L in LEVELS:  # symmetric about the median, half-width = offset x the series' scale
        np.testing.assert_allclose(out["y"] - out[f"y_lo_{L}"], out[f"y_hi_{L}"] - out["y"], rtol=1e-9)
    std = fc.scaler_["std"][0][0]
    np.testing.assert_allclose(out["y_hi_95"] - out["y"], off[1, :, 0] * std, rtol=1e-6)
    pd.testing.assert_frame_equal(Forecaster.load(run).predict(df), out)
    m = fc.backtest(df)["model"]
    assert 0 < m["coverage_80"] <= m["coverage_95"] <= 1 and m["width_80"] < m["width_95"]


def test_residual_offsets_that_are_negative_are_refused_on_load(residual, tmp_path):
    """FAULTS T12: a residual interval's half-width below 0 is no interval; a re-hashed edit must not load."""
    _, _, run = residual
    copy = _rehashed_copy(run, tmp_path / "run", lambda iv: iv["offsets"][0][0].__setitem__(0, -0.5))
    with pytest.raises(CheckpointError, match=r"method residual .* >= 0"):
        Forecaster.load(copy)


def test_onnx_export_of_residual_intervals_reproduces_predict_by_the_recipe(residual):
    """export.json's recipe, written out here without lstmcast, turns the ONNX output into predict's columns."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    from lstmcast.export import export_run

    fc, df, run = residual
    res = export_run(run)
    assert res.max_abs_diff <= 1e-4
    spec = json.loads(res.spec_path.read_text())
    iv = spec["intervals"]
    assert iv["method"] == "residual" and iv["offsets"] == fc.meta_.intervals["offsets"]
    assert any("method 'residual'" in step for step in spec["recipe"])
    mean, std = np.asarray(spec["scaler"]["mean"][0]), np.asarray(spec["scaler"]["std"][0])
    x = ((df[spec["channels"]].to_numpy(np.float64)[-spec["window"]:] - mean) / std).astype(np.float32)[None]
    y = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    y = y[0, :, 0].astype(np.float64)  # (H, Q)
    m, off = iv["median_index"], np.asarray(iv["offsets"])[:, :, 0]  # (levels, H)
    for k in range(len(iv["levels"])):
        y[:, m - 1 - k], y[:, m + 1 + k] = y[:, m] - off[k], y[:, m] + off[k]
    y = np.sort(y, axis=-1) * std[0] + mean[0]
    want = fc.predict(df)
    cols = ["y_lo_95", "y_lo_80", "y", "y_hi_80", "y_hi_95"]
    np.testing.assert_allclose(y, want[cols].to_numpy(), atol=1e-4)
