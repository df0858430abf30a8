"""The run folder: what a fitted Forecaster is on disk. safetensors + JSON/YAML only; never pickle.

RUN/config.yaml (resolved), model.safetensors, scaler.json, meta.json, history.json, manifest.json
(sha256 of each file, checked on load).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast import __version__, atomic
from lstmcast.config import validate_config, yaml_load_bytes
from lstmcast.errors import CheckpointError, ConfigError, short_list, short_path
from lstmcast.run.manifest import (
    HEX64,
    MANIFEST,
    file_sha256,
    is_unsafe,
    read_verified,
    refuse_only_pickles,
    refuse_unsafe,
    sha256_bytes,
)
from lstmcast.run.meta import REMEDY, RunMeta, check_meta, check_scaler, check_weights, raise_damaged

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.model.network import LSTMForecaster

FORMAT_VERSION = 1
HASHED = ("config.yaml", "model.safetensors", "scaler.json", "meta.json")
# train.refit: model.safetensors forecasts (trained on all the data); this one never saw the test split and
# is the one every backtest number comes from
BACKTEST_MODEL = "backtest_model.safetensors"


@dataclass
class StoredRun:
    """A run folder's contents: config, metadata, scaler, weights (tensors by name), history and the training
    file's record. ``read_run`` returns one, checked; ``save_run`` writes one."""

    config: ForecastConfig
    meta: RunMeta
    scaler: dict[str, Any]
    state: dict[str, Any]
    backtest_state: dict[str, Any] | None  # train.refit: the weights every backtest number comes from
    history: list[Any]
    data: dict[str, str] | None = None  # manifest.json "data": the training file's path and sha256 (None: unknown)
    folder: Path | None = None  # where it was read from (None: not read from a folder)


def build_meta(cfg: ForecastConfig, prep: Prepared, model: LSTMForecaster, device: str, precision: str) -> RunMeta:
    import torch

    s = prep.series
    return RunMeta.model_validate({
        "format_version": FORMAT_VERSION, "lstmcast_version": __version__, "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "layout": s.layout, "time_col": s.time_col, "id_col": s.id_col, "targets": s.targets,
        "features": s.features, "channels": s.channel_names, "ids": s.ids, "freq": s.freq, "tz": s.tz,
        "anchor": str(s.times[0][0]), "window": prep.window, "horizon": prep.horizon, "season": prep.season,
        "n_targets": s.n_targets, "input_size": int(prep.scaled.shape[1]),
        "future_features": list(s.future_features), "integer_time": bool(s.integer_time),
        "inputs": prep.inputs.as_dict(),
        "lengths": s.lengths(), "train_end": [sp.train_end for sp in prep.splits],
        "val_end": [sp.val_end for sp in prep.splits],
        "last_time": [str(t[-1]) for t in s.times], "device": device, "precision": precision,
        "n_parameters": sum(p.numel() for p in model.parameters()), "mask_channel": bool(prep.mask_channel),
        "transform": cfg.data.transform, "scaling": prep.scaling_kind,
    })


def build_scaler(prep: Prepared) -> dict[str, Any]:
    return {"ids": list(prep.series.ids), "channels": prep.series.channel_names,
            "mean": prep.means, "std": prep.stds}


def save_run(path: str | os.PathLike[str], run: StoredRun) -> str:
    """Write ``run`` as the run folder ``path``: each file atomically, manifest.json (their sha256) last."""
    from safetensors.torch import save as st_save

    folder = Path(path)
    files: dict[str, bytes] = {
        "config.yaml": run.config.to_yaml().encode(),
        "model.safetensors": st_save(run.state, metadata={"format_version": str(FORMAT_VERSION)}),
        "scaler.json": json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                   for k, v in run.scaler.items()}, indent=2).encode(),
        "meta.json": json.dumps(run.meta.as_json(), indent=2).encode(),
    }
    if run.backtest_state is not None:  # train.refit: the model the backtest comes from is kept beside it
        files[BACKTEST_MODEL] = st_save(run.backtest_state, metadata={"format_version": str(FORMAT_VERSION)})
    for name, data in files.items():
        atomic.write_bytes(folder / name, data)
    atomic.write_json(folder / "history.json", run.history)
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION,
                                "sha256": {n: sha256_bytes(d) for n, d in files.items()}}
    if run.data is not None:
        manifest["data"] = dict(run.data)
    atomic.write_json(folder / MANIFEST, manifest)
    return str(folder)


def data_record(path: str | None) -> dict[str, str] | None:
    """``{"path", "sha256"}`` of a regular data file (None for none, a folder of Parquet files or a device):
    what lets a stored data.path be read again later (``stored_data_path``)."""
    digest = file_sha256(path)  # None for none, or what is not a regular file
    return None if path is None or digest is None else {"path": path, "sha256": digest}


def stored_data_path(path: str | None, record: dict[str, str] | None, folder: Path) -> str | None:
    """The training data file a run folder or checkpoint names, for `predict` / `evaluate` / `train --resume`
    without --data (FAULTS R9).

    A path read from a run folder is not a path the user typed: anyone who can edit the folder (and re-hash
    it) can point it anywhere, e.g. at /etc/shadow. It is read only when ``record`` (manifest.json "data", a
    checkpoint's "data_file") names it and its bytes still have the recorded sha256 (a forged record needs
    the file's content, so a secret is never opened); otherwise ConfigError (exit 2) asking for --data. The
    file is never opened unless it is a regular file."""
    again = f": pass the data file with --data (Python API: the data argument) (run folder {folder})"
    if path is None:
        return None  # nothing stored: the caller's "no data given"
    if record is None or record.get("path") != path:
        raise ConfigError(f"the run folder's data.path {short_path(path)} was not recorded with its sha256 at "
                          "training, so it is not read (a path stored in a run folder is not trusted like one you type)"
                          + again)
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
        same = regular and file_sha256(path) == record.get("sha256")
    except OSError:
        same = False
    if not same:
        raise ConfigError(f"the run's training data {short_path(path)} is gone or changed since training (its sha256 "
                          "differs from the one recorded at training), so it is not read" + again)
    return path


def _read(folder: Path, name: str, manifest: dict[str, Any]) -> bytes:
    return read_verified(folder, name, manifest.get("sha256", {}).get(name), "lstmcast run folder",
                         ": retrain, or restore the run folder from a backup")


def _json(data: bytes, name: str, kind: type = object) -> Any:
    return atomic.parse_json(data, name, kind, hint=": the run folder is damaged")


def _check_config_agrees(cfg: ForecastConfig, meta: dict[str, Any], folder: Path) -> None:
    """config.yaml and meta.json describe the same model: horizon always, window when the config fixed it."""
    d = cfg.data
    problems = [f"data.{key} is {want} in config.yaml but {meta[key]} in meta.json"
                for key, want in (("horizon", d.horizon), ("window", d.window))
                if want is not None and want != meta[key]]
    if problems:
        raise CheckpointError(f"{folder} is damaged or was edited: " + "; ".join(problems) + ": retrain this run, "
                              "or restore the run folder from a backup")


def read_manifest(folder: Path) -> dict[str, Any]:
    refuse_unsafe(folder)
    if not folder.is_dir():
        what = "is not a folder" if os.path.lexists(folder) else "does not exist"  # R14: x.csv exists
        raise CheckpointError(f"run folder {str(folder)!r} {what}: pass the run folder `lstmcast train` wrote "
                              "(it holds manifest.json); a data file goes to fit / predict / --data")
    if not (folder / "model.safetensors").exists():
        refuse_only_pickles(folder, sorted(p.name for p in folder.iterdir() if is_unsafe(p)), "files")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"{folder} is not an lstmcast run folder (no manifest.json)")
    manifest = _json(mpath.read_bytes(), "manifest.json", dict)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{folder} was written in artifact format version {version!r}; this lstmcast reads "
                              f"version {FORMAT_VERSION}: use the matching lstmcast release or retrain")
    hashes = manifest.get("sha256")
    if not isinstance(hashes, dict) or not all(isinstance(hashes.get(n), str) for n in HASHED):
        raise CheckpointError(f"{mpath} is damaged: it must list a sha256 for each of {list(HASHED)}")
    _check_manifest_entries(manifest, hashes, mpath)
    data = manifest.get("data")
    if data is not None and not (isinstance(data, dict) and set(data) == {"path", "sha256"}
                                 and all(isinstance(v, str) and len(v) <= 5000 for v in data.values())):
        raise CheckpointError(f"{mpath} is damaged: \"data\" must hold the training file's \"path\" and "
                              "\"sha256\"" + REMEDY)
    return manifest


def _check_manifest_entries(manifest: dict[str, Any], hashes: dict[str, Any], mpath: Path) -> None:
    """R11: a manifest lists exactly the files lstmcast writes, each with a sha256; nothing else is ignored."""
    problems = []
    keys = sorted(set(manifest) - {"format_version", "sha256", "data"})
    if keys:
        problems.append(f"unknown keys {short_list(keys)}")
    files = [n for n in hashes if n not in (*HASHED, BACKTEST_MODEL)]
    if files:
        problems.append(f"sha256 entries for files lstmcast never writes there: {short_list(files)}")
    odd = [n for n, v in hashes.items() if n not in files and not (isinstance(v, str) and HEX64.fullmatch(v))]
    if odd:
        problems.append(f"the sha256 of {short_list(odd)} is not 64 hex digits")
    raise_damaged(mpath, problems)


def read_run(path: str | os.PathLike[str]) -> StoredRun:
    """Read and check every file of a run folder (hashes, schemas, weights); build nothing. No pickle anywhere."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    folder = Path(path)
    manifest = read_manifest(folder)
    try:
        raw = yaml_load_bytes(_read(folder, "config.yaml", manifest))
        if isinstance(raw.get("model"), dict):  # folders written before the linear skip existed had none
            raw["model"].setdefault("linear_skip", False)
        cfg: ForecastConfig = validate_config(raw)
    except (ConfigError, ValueError, TypeError, RecursionError) as exc:  # YAML can raise ValueError (dates)
        raise CheckpointError(f"{folder / 'config.yaml'} is invalid: {exc}") from None
    meta = _json(_read(folder, "meta.json", manifest), "meta.json", dict)
    scaler = _json(_read(folder, "scaler.json", manifest), "scaler.json", dict)
    check_meta(meta, folder / "meta.json")  # FAULTS T12: a re-hashed edit must not load
    _check_config_agrees(cfg, meta, folder)
    scaler = check_scaler(scaler, meta, folder / "scaler.json")
    try:
        state = st_load(_read(folder, "model.safetensors", manifest))
    except (SafetensorError, ValueError, TypeError, OSError) as exc:
        raise CheckpointError(f"{folder / 'model.safetensors'} is not a valid safetensors file ({exc})") from None
    check_weights(state, folder / "model.safetensors")
    hist = folder / "history.json"
    history = _json(hist.read_bytes(), "history.json", list) if hist.is_file() else []
    bstate = None
    if BACKTEST_MODEL in manifest.get("sha256", {}):
        try:
            bstate = st_load(_read(folder, BACKTEST_MODEL, manifest))
        except (SafetensorError, ValueError, TypeError, OSError) as exc:
            raise CheckpointError(f"{folder / BACKTEST_MODEL} is not a valid safetensors file ({exc})") from None
        check_weights(bstate, folder / BACKTEST_MODEL)
    return StoredRun(config=cfg, meta=RunMeta.model_validate(meta), scaler=scaler, state=state,
                     backtest_state=bstate, history=history, data=manifest.get("data"), folder=folder)
