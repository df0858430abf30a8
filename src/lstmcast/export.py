"""ONNX export of a trained run, checked against PyTorch: deploy a forecaster without PyTorch.

RUN/model.onnx maps ``x`` (B, L, F) -> ``y`` (B, H, T) in scaled units, exactly like the module (a quantile
model, model.levels set: (B, H, T, Q), with the quantiles and calibration offsets in export.json); the
export.json beside it holds what a deployment needs to go from raw values to forecasts (channel order,
window, horizon, per-series scaler, a recipe) and the model's sha256. Both are written atomically,
and only after onnxruntime has reproduced the PyTorch outputs.

>>> from lstmcast.export import export_run
>>> res = export_run("runs/demo")                        # doctest: +SKIP
>>> res.onnx_path, res.max_abs_diff                      # doctest: +SKIP
('runs/demo/model.onnx', 1.2e-07)
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import atomic
from .artifacts import sha256_bytes
from .errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from .forecaster import Forecaster
    from .model import LSTMForecaster

log = logging.getLogger(__name__)

OPSET = 18  # the torch.export-based exporter's lowest opset; onnxruntime >= 1.14 runs it
TOLERANCE = 1e-4
PARITY_BATCHES = (1, 7)  # B=1 and B=7: proves the batch axis is really dynamic
INSTALL_HINT = "pip install 'lstmcast[export]'"


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    spec_path: Path
    sha256: str
    max_abs_diff: float  # over all parity batches
    diffs: dict[int, float]  # batch size -> max |onnx - torch|
    opset: int


def _require_runtime() -> Any:
    """onnx, onnxscript (the exporter's backend) and onnxruntime are the optional `export` extra."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        # ConfigError (exit 2), as for a missing database driver: the fix is in the environment, not the run
        raise ConfigError(f"ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                          f"not installed: {INSTALL_HINT}")
    import onnxruntime

    return onnxruntime


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's warnings and log lines are about torch internals, nothing a user can act on."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def to_onnx_bytes(model: LSTMForecaster, window: int, opset: int = OPSET) -> bytes:
    """Serialized ONNX of ``model``: input ``x`` (B, L, F) with a dynamic batch axis, output ``y`` (B, H, T)."""
    import torch

    dtype = model.head.weight.dtype
    sample = torch.zeros(2, window, model.input_size, dtype=dtype)  # B=2: B=1 would be specialised
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(model.eval(), (sample,), dynamo=True, input_names=["x"], output_names=["y"],
                                    opset_version=opset, dynamic_shapes={"x": {0: torch.export.Dim("B")}},
                                    external_data=False, verbose=False)
    return program.model_proto.SerializeToString()


def check_parity(model: LSTMForecaster, onnx_bytes: bytes, window: int, tol: float = TOLERANCE,
                 batches: tuple[int, ...] = PARITY_BATCHES, seed: int = 0) -> dict[int, float]:
    """Max |onnxruntime - torch| per batch size on standard-normal windows (scaled units); raise above ``tol``."""
    import torch

    ort = _require_runtime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    dtype = model.head.weight.dtype
    diffs: dict[int, float] = {}
    for B in batches:
        x = torch.from_numpy(rng.standard_normal((B, window, model.input_size))).to(dtype)  # (B, L, F)
        with torch.inference_mode():
            want = model(x).numpy()  # (B, H, T)
        got = sess.run(["y"], {"x": x.numpy()})[0]
        if got.shape != want.shape:
            raise CheckpointError(f"ONNX parity check failed: for B={B} the ONNX model returned shape {got.shape}, "
                                  f"PyTorch {want.shape}; the export is not usable")
        diffs[B] = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    worst = max(diffs.values())
    if not worst <= tol:  # NaN fails too
        shown = ", ".join(f"B={b}: {d:.3g}" for b, d in diffs.items())
        raise CheckpointError(f"ONNX parity check failed: max |onnxruntime - torch| = {worst:.3g} > {tol:g} "
                              f"({shown}); nothing was written. Rerun with --debug and report it with the "
                              "torch/onnx versions")
    return diffs


def build_spec(fc: Forecaster, onnx_name: str, digest: str, opset: int) -> dict[str, Any]:
    """export.json: everything a deployment needs to turn raw values into forecasts around model.onnx."""
    import onnxruntime
    import torch

    from . import __version__

    meta, scaler = fc.meta_, fc.scaler_
    L, H, T = meta["window"], meta["horizon"], meta["n_targets"]
    channels = list(meta["channels"])
    dtype = str(fc.model_.head.weight.dtype).removeprefix("torch.")
    spec = {
        "format_version": 1, "model": onnx_name, "sha256": digest, "opset": opset,
        "input": {"name": "x", "shape": ["B", L, len(channels)], "dtype": dtype},
        "output": {"name": "y", "shape": ["B", H, T], "dtype": dtype},
        "channels": channels, "targets": list(meta["targets"]), "features": list(meta["features"]),
        "n_targets": T, "window": L, "horizon": H, "freq": meta["freq"], "tz": meta.get("tz"),
        "layout": meta["layout"], "time_col": meta["time_col"], "id_col": meta.get("id_col"),
        "scaler": {"ids": list(scaler["ids"]), "mean": np.asarray(scaler["mean"]).tolist(),
                   "std": np.asarray(scaler["std"]).tolist()},
        "recipe": [
            f"per series: take its last {L} rows, on the {meta['freq']!r} grid with no gaps, as an array of "
            f"shape ({L}, {len(channels)}) in the order of 'channels' (layout 'wide': channel 'value' is the "
            "series' own column, named by its id)",
            "scale: x = (raw - scaler.mean[i]) / scaler.std[i], with i the series' index in scaler.ids "
            "(layout 'single': i = 0); stack series to (B, L, F) as float32",
            "run: y = model(x), shape (B, H, T), in scaled units",
            f"unscale: forecast = y * scaler.std[i][:{T}] + scaler.mean[i][:{T}] (the first {T} channels are "
            "the targets)",
            f"timestamps: the {H} steps after the series' last timestamp at frequency 'freq'",
        ],
        "exported_with": {"lstmcast": __version__, "torch": torch.__version__.split("+")[0],
                          "onnxruntime": onnxruntime.__version__},
    }
    if meta.get("intervals"):
        _add_intervals(spec, meta["intervals"])
    return spec


def _add_intervals(spec: dict[str, Any], iv: dict[str, Any]) -> None:
    """A quantile model: y is (B, H, T, Q); the spec lists the quantiles, levels and calibration offsets."""
    H, T, Q = spec["horizon"], spec["n_targets"], len(iv["quantiles"])
    spec["output"]["shape"] = ["B", H, T, Q]
    method = iv.get("method", "quantile")
    spec["intervals"] = {"levels": iv["levels"], "quantiles": iv["quantiles"], "calibration": iv["calibration"],
                         "method": method, "offsets": iv["offsets"], "median_index": Q // 2}
    spec["recipe"][2] = f"run: y = model(x), shape (B, H, T, Q={Q}), in scaled units; quantiles ascending"
    centre = ("the median y[..., median_index] minus offsets[k][h][t] for the lower and plus it for the upper "
              "quantile (method 'residual')" if method == "residual" else
              "the lower quantile minus offsets[k][h][t] and the upper one plus it (method 'quantile')")
    spec["recipe"].insert(3, "calibrate (offsets not null): for the k-th level in 'levels' (lower quantile index "
                             f"median_index - 1 - k, upper median_index + 1 + k) set them to {centre}; then clip "
                             "the lower ones to at most and the upper ones to at least the median, and sort along Q")
    spec["recipe"][4] = (f"unscale: forecast = y * scaler.std[i][:{T}, None] + scaler.mean[i][:{T}, None] "
                         f"(the first {T} channels are the targets); y[..., median_index] is the point forecast")


def export_run(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
               opset: int = OPSET, tol: float = TOLERANCE) -> ExportResult:
    """Export RUN's model to ONNX (default RUN/model.onnx) plus export.json beside it, after a parity check.

    Nothing is written unless onnxruntime reproduces PyTorch within ``tol`` for B=1 and B=7.
    """
    from .artifacts import load_run

    _require_runtime()
    target = Path(run) / "model.onnx" if out is None else Path(out)
    if target.is_dir():
        raise ConfigError(f"--out {target} is a folder: name the file, e.g. {target / 'model.onnx'}")
    if target.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {target} must end in .onnx")
    fc = load_run(run)
    window = fc.meta_["window"]
    data = to_onnx_bytes(fc.model_, window, opset)
    diffs = check_parity(fc.model_, data, window, tol)
    digest = sha256_bytes(data)
    spec_path = target.with_name("export.json")
    atomic.write_bytes(target, data)
    atomic.write_json(spec_path, build_spec(fc, target.name, digest, opset))
    worst = max(diffs.values())
    log.info("exported %s (opset %d, sha256 %s); parity max |diff| %.3g", target, opset, digest[:12], worst)
    return ExportResult(onnx_path=target, spec_path=spec_path, sha256=digest, max_abs_diff=worst, diffs=diffs,
                        opset=opset)
