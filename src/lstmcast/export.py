"""ONNX export of a trained run, checked against PyTorch: deploy a forecaster without PyTorch.

RUN/model.onnx maps ``x`` (B, L, F) -> ``y`` (B, H, T) in scaled units, exactly like the module (a quantile
model, model.levels set: (B, H, T, Q), with the quantiles and calibration offsets in export.json). A model
with known-future inputs (data.future_features, data.calendar) also takes ``future`` (B, H, K), and one with
statics (data.static_features, model.id_embedding) ``static`` (B, S); every input has a dynamic batch axis.
The export.json beside it holds what a deployment needs to go from raw values to forecasts (each input's
shape, role and channel encodings, window, horizon, per-series scaler, a recipe) and the model's sha256.
Both are written atomically, and only after onnxruntime has reproduced the PyTorch outputs.

>>> from lstmcast.export import export_run
>>> res = export_run("runs/demo")                        # doctest: +SKIP
>>> res.onnx_path, res.max_abs_diff                      # doctest: +SKIP
('runs/demo/model.onnx', 1.2e-07)
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast import __version__, atomic
from lstmcast.data.calendar import calendar_channel_names
from lstmcast.data.inputs import InputSpec
from lstmcast.errors import CheckpointError, ConfigError, short_path
from lstmcast.forecaster import load_run
from lstmcast.run.manifest import sha256_bytes

if TYPE_CHECKING:
    from lstmcast.forecaster import Forecaster
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.run.meta import Local, RunMeta

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


def input_shapes(model: LSTMForecaster, window: int) -> dict[str, tuple[int, ...]]:
    """The model's ONNX inputs in order, each shape without the batch axis: ``x`` (L, F), ``future`` (H, K)
    with known-future inputs, ``static`` (S,) with statics (numeric ones, then categorical codes)."""
    shapes = {"x": (window, model.input_size)}
    if model.future_size:
        shapes["future"] = (model.horizon, model.future_size)
    if model.statics.width:
        shapes["static"] = (model.static_size + len(model.static_cardinalities),)
    return shapes


def sample_inputs(model: LSTMForecaster, window: int, batch: int, rng: np.random.Generator | None = None) -> dict:
    """Inputs for a batch of ``batch``: zeros, or with ``rng`` standard-normal values where the model takes
    real numbers and valid codes in [0, cardinality) (as floats) where it takes categorical statics."""
    import torch

    dtype = model.head.weight.dtype
    out = {}
    for name, shape in input_shapes(model, window).items():
        a = np.zeros((batch, *shape)) if rng is None else rng.standard_normal((batch, *shape))
        if name == "static" and rng is not None:
            for k, card in enumerate(model.static_cardinalities):  # code 0: unknown, the rest the vocabulary
                a[:, model.static_size + k] = rng.integers(0, card, batch)
        out[name] = torch.from_numpy(a).to(dtype)
    return out


def to_onnx_bytes(model: LSTMForecaster, window: int, opset: int = OPSET) -> bytes:
    """Serialized ONNX of ``model``: inputs ``x`` (B, L, F) [, ``future`` (B, H, K)] [, ``static`` (B, S)] with a
    dynamic batch axis, output ``y`` (B, H, T)."""
    import torch

    sample = sample_inputs(model, window, 2)  # B=2: B=1 would be specialised
    x, extra = sample.pop("x"), sample  # future and static are keyword arguments of forward
    batch = torch.export.Dim("B")  # one batch axis shared by every input
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(model.eval(), (x,), kwargs=extra or None, dynamo=True,
                                    input_names=["x", *extra], output_names=["y"], opset_version=opset,
                                    dynamic_shapes={name: {0: batch} for name in ["x", *extra]},
                                    external_data=False, verbose=False)
    return program.model_proto.SerializeToString()


def check_parity(model: LSTMForecaster, onnx_bytes: bytes, window: int, tol: float = TOLERANCE,
                 batches: tuple[int, ...] = PARITY_BATCHES, seed: int = 0) -> dict[int, float]:
    """Max |onnxruntime - torch| per batch size on random inputs (``sample_inputs``: standard-normal windows in
    scaled units, valid categorical codes); raise above ``tol``."""
    import torch

    ort = _require_runtime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    diffs: dict[int, float] = {}
    for B in batches:
        inputs = sample_inputs(model, window, B, rng)  # x (B, L, F) [, future (B, H, K)] [, static (B, S)]
        with torch.inference_mode():
            want = model(inputs["x"], future=inputs.get("future"), static=inputs.get("static")).numpy()  # (B, H, T)
        got = sess.run(["y"], {name: t.numpy() for name, t in inputs.items()})[0]
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

    meta, scaler = fc.meta_, fc.scaler_
    L, H, T = meta.window, meta.horizon, meta.n_targets
    channels = list(meta.channels)
    dtype = str(fc.model_.head.weight.dtype).removeprefix("torch.")
    spec = {
        "format_version": 1, "model": onnx_name, "sha256": digest, "opset": opset,
        "input": {"name": "x", "shape": ["B", L, meta.input_size], "dtype": dtype},
        "inputs": describe_inputs(meta, fc.model_, dtype),
        "output": {"name": "y", "shape": ["B", H, T], "dtype": dtype},
        "channels": channels, "targets": list(meta.targets), "features": list(meta.features),
        "n_targets": T, "window": L, "horizon": H, "freq": meta.freq, "tz": meta.tz,
        "layout": meta.layout, "time_col": meta.time_col, "id_col": meta.id_col,
        "scaler": {"ids": list(scaler["ids"]), "mean": np.asarray(scaler["mean"]).tolist(),
                   "std": np.asarray(scaler["std"]).tolist()},
        "recipe": [
            f"per series: take its last {L} rows, on the {meta.freq!r} grid with no gaps, as an array of "
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
    if meta.transform == "log":  # data.transform: the targets' log is scaled, the forecast exp'ed back
        spec["transform"] = "log"
        spec["recipe"][1] = "log the target channels, then " + spec["recipe"][1]
        spec["recipe"][3] += "; then exp() it (data.transform: log)"
    if meta.mask_channel:
        spec["recipe"][0] += ("; a series with fewer rows is left-padded with copies of its first row, and the "
                              "'mask' channel (1 real, 0 padding) is inserted where 'inputs' lists it")
    if meta.intervals:
        _add_intervals(spec, meta.intervals)
    if meta.local is not None and meta.local.weight > 0:
        _add_local(spec, meta.local, meta.season)
    if len(spec["inputs"]) > 1 or spec["inputs"][0]["parts"]["calendar"]:
        _add_input_recipe(spec, meta)
    return spec


# where each calendar feature lies in its cycle, p in [0, 1) (lstmcast.data.calendar), for a deployment to
# compute sin(2 pi p) and cos(2 pi p) without lstmcast
CALENDAR_POSITIONS = {
    "minute_of_hour": "(minute + second / 60) / 60",
    "hour_of_day": "(hour + minute / 60) / 24",
    "day_of_week": "weekday / 7, Monday = 0",
    "day_of_month": "(day - 1) / days in the month",
    "day_of_year": "(day of the year - 1) / (366 in a leap year, else 365)",
    "week_of_year": "(ISO week - 1) / 52",
    "month_of_year": "(month - 1) / 12",
    "quarter_of_year": "(quarter - 1) / 4",
}
_SCALED = "scaled with the series' scaler like the other channels: (raw - scaler.mean[i][j]) / scaler.std[i][j], " \
          "j the channel's index in 'channels'"


def describe_inputs(meta: RunMeta, model: LSTMForecaster, dtype: str) -> list[dict[str, Any]]:
    """Each ONNX input with its shape, role and what its channels (or columns) hold and how they are encoded."""
    spec = InputSpec.from_dict(meta.inputs_dict())
    shapes = input_shapes(model, meta.window)
    T, channels, kf = meta.n_targets, list(meta.channels), len(spec.future_features)
    future, cal = channels[len(channels) - kf:], calendar_channel_names(spec.calendar)
    cal_text = [f"calendar ({', '.join(cal)}): sin and cos of the position in each cycle, see 'calendar'; "
                "not scaled"] if cal else []
    past = channels[:len(channels) - kf]
    mask = ["mask"] if meta.mask_channel else []  # a model trained with left-padded short series (issue 20)
    mask_text = ["mask: 1.0 on a real row, 0.0 on left padding; a series shorter than the window is padded on the "
                 "left with copies of its first row (every channel, calendar included)"] if mask else []
    out = [{"name": "x", "shape": ["B", *shapes["x"]], "dtype": dtype, "role": "past",
            "channels": past + mask + future + cal,
            "parts": {"targets": channels[:T], "past_features": channels[T:len(channels) - kf],
                      **({"mask": mask} if mask else {}), "future_features": future, "calendar": cal},
            "encoding": [f"targets, past features and future features over the window: {_SCALED}", *mask_text,
                         *cal_text]}]
    if "future" in shapes:
        out.append({"name": "future", "shape": ["B", *shapes["future"]], "dtype": dtype, "role": "known_future",
                    "channels": future + cal, "parts": {"future_features": future, "calendar": cal},
                    "encoding": [f"over the horizon's timestamps; future features {_SCALED}", *cal_text]})
    if "static" in shapes:
        out.append({"name": "static", "shape": ["B", *shapes["static"]], "dtype": dtype, "role": "static",
                    "columns": _static_columns(spec, meta.id_col),
                    "encoding": ["one row per series, in the order of 'columns': numeric ones (raw - mean) / std, "
                                 "then categorical codes as floats: 1 + the value's index in 'vocabulary', "
                                 "0 = unknown (a value, or a series, not seen in training)"]})
    return out


def _static_columns(spec: Any, id_col: str | None) -> list[dict[str, Any]]:
    cols: list[dict[str, Any]] = [{"name": n, "kind": "numeric", "mean": m, "std": s}
                                  for n, m, s in zip(spec.static_numeric, spec.static_mean, spec.static_std)]
    cols += [{"name": n, "kind": "categorical", "vocabulary": list(v), "unknown_code": 0}
             for n, v in zip(spec.static_categorical, spec.vocabularies)]
    if spec.id_vocabulary is not None:  # model.id_embedding
        cols.append({"name": id_col or "series id", "kind": "series_id", "vocabulary": list(spec.id_vocabulary),
                     "unknown_code": 0})
    return cols


def _add_input_recipe(spec: dict[str, Any], meta: RunMeta) -> None:
    """A model with calendar channels, known-future or static inputs: how to build each, and how to run it."""
    inputs = {d["name"]: d for d in spec["inputs"]}
    cal = inputs["x"]["parts"]["calendar"]
    F = inputs["x"]["shape"][2]
    if cal:
        names = meta.inputs.calendar if meta.inputs is not None else []
        spec["calendar"] = {"features": names, "channels": cal, "positions": {n: CALENDAR_POSITIONS[n] for n in names},
                            "encoding": "per feature: sin(2 pi p), cos(2 pi p) of its position p in [0, 1) in the "
                                        "cycle, on the local wall clock in 'tz' when 'tz' is set"}
        spec["recipe"][1] = ("scale: x = (raw - scaler.mean[i]) / scaler.std[i], with i the series' index in "
                             f"scaler.ids (layout 'single': i = 0); append the {len(cal)} calendar channels "
                             f"{cal} of each row's timestamp (not scaled); stack series to (B, L, F={F}) as float32")
    steps, feed = [], ["x"]
    if "future" in inputs:
        K = inputs["future"]["shape"][2]
        steps.append(f"future: per series an array ({spec['horizon']}, {K}) over the forecast timestamps: the known "
                     f"values of {inputs['future']['parts']['future_features']} (given by the caller) scaled like "
                     f"their channels in x, then the calendar channels {cal} of those timestamps; stack to "
                     f"(B, H, K={K}) as float32")
        feed.append("future")
    if "static" in inputs:
        S = inputs["static"]["shape"][1]
        steps.append(f"static: per series one row of the {S} columns in inputs[static].columns: numeric (raw - mean)"
                     " / std, categorical 1 + the index in its vocabulary (0: unknown); stack to "
                     f"(B, S={S}) as float32")
        feed.append("static")
    if meta.layout == "long":
        steps.append("a series not in scaler.ids (never seen in training): its scaler is the mean and std (0 -> 1) "
                     "of its own rows, and its series-id code (model.id_embedding) is 0")
    spec["recipe"][2:2] = steps
    run = 2 + len(steps)
    spec["recipe"][run] = spec["recipe"][run].replace("model(x)", f"model({', '.join(feed)}) (ONNX inputs by name)")


def _add_local(spec: dict[str, Any], loc: Local, season: int | None) -> None:
    """A table's forecast combines the model's with each series' Theta forecast (lstmcast.model.theta)."""
    from lstmcast.model.theta import ALPHAS, HISTORY_CAP, SEASON_TEST_Z

    spec["local"] = {"method": loc.method, "weight": loc.weight, "drift": loc.drift, "season": season,
                     "history_cap": HISTORY_CAP, "alphas": [round(float(a), 6) for a in ALPHAS],
                     "season_test_z": SEASON_TEST_Z}
    spec["recipe"].insert(len(spec["recipe"]) - 1, (
        f"combine: forecast = {1 - loc.weight:g} * forecast + {loc.weight:g} * theta, theta each series' Theta "
        f"forecast of its last <= {HISTORY_CAP} target values (after the log with data.transform: log, "
        "exp'ed back after the sum): seasonal indices divided out where 'local.season' > 1, the series has 3 "
        "seasons, no gap, every value > 0 and |autocorrelation at lag season| > season_test_z * sqrt((1 + 2 * "
        "sum of the squared lower-lag autocorrelations) / n) (classical multiplicative decomposition); simple "
        "exponential smoothing from the first value with the alpha of 'alphas' of the least squared one-step "
        f"error; plus drift {loc.drift:g} * (least-squares slope) * (h - 1 + 1/alpha - (1 - alpha)^n / alpha) "
        "at step h; times the indices again. Every quantile moves with the point forecast"))


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
    _require_runtime()
    target = Path(run) / "model.onnx" if out is None else Path(out)
    if target.is_dir():
        raise ConfigError(f"--out {target} is a folder: name the file, e.g. {target / 'model.onnx'}")
    if target.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {target} must end in .onnx")
    spec_path = target.with_name("export.json")
    for path in (out if out is not None else target, spec_path):  # R13: both targets checked before any work
        atomic.check_target(path)
    _refuse_other_models_spec(spec_path, target)  # R6: never replace another model's export.json
    fc = load_run(run)
    if fc.config_.model.stateful:  # the graph is the window forward from a zero state: another model's forecast
        raise ConfigError(f"{short_path(run)} is a stateful model (model.stateful: true): its forecasts come from "
                          "each series' carried state, which an ONNX graph of the window forward (zero state) "
                          "would not reproduce; serve it with `lstmcast serve` or forecast with `lstmcast predict`, "
                          "or train with model.stateful: false to export")
    window = fc.meta_.window
    data = to_onnx_bytes(fc.model_, window, opset)
    diffs = check_parity(fc.model_, data, window, tol)
    digest = sha256_bytes(data)
    atomic.write_bytes(target, data)
    atomic.write_json(spec_path, build_spec(fc, target.name, digest, opset))
    worst = max(diffs.values())
    log.info("exported %s (opset %d, sha256 %s); parity max |diff| %.3g", target, opset, digest[:12], worst)
    return ExportResult(onnx_path=target, spec_path=spec_path, sha256=digest, max_abs_diff=worst, diffs=diffs,
                        opset=opset)


def _refuse_other_models_spec(spec_path: Path, target: Path) -> None:
    """One export.json per folder, for the .onnx file it names: a second export under another file name into
    the same folder would replace the first model's spec (scaler, interval offsets, hash) and leave its .onnx
    without one. Re-exporting the same file name replaces both, as intended."""
    if not spec_path.is_file():
        return
    try:
        named = json.loads(spec_path.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        named = None
    if named == target.name:
        return
    what = f"the export of {str(named)[:80]!r}" if isinstance(named, str) else "not an export spec lstmcast can read"
    raise ConfigError(f"{spec_path} is {what}: exporting {target.name} into {target.parent} would replace it. "
                      f"Export into a folder of its own (--out OTHER_DIR/{target.name[:80]}), or move {spec_path} "
                      "away")
