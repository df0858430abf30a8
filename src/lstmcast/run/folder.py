"""The run folder: what a fitted Forecaster is on disk. safetensors + JSON/YAML only; never pickle.

RUN/config.yaml (resolved), model.safetensors, scaler.json, meta.json, history.json, manifest.json
(sha256 of each file, checked on load).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast import atomic
from lstmcast.errors import CheckpointError, ConfigError, LstmcastError, cut, short, short_list, short_path
from lstmcast.run.meta import RunMeta, check_meta, check_scaler, check_weights

_REMEDY = ": retrain this run, or restore the run folder from a backup"
_HEX64 = re.compile(r"[0-9a-f]{64}")

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared
    from lstmcast.forecaster import Forecaster
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.accel import Accel

FORMAT_VERSION = 1
HASHED = ("config.yaml", "model.safetensors", "scaler.json", "meta.json")
# train.refit: model.safetensors forecasts (trained on all the data); this one never saw the test split and
# is the one every backtest number comes from
BACKTEST_MODEL = "backtest_model.safetensors"
UNSAFE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


@dataclass
class StoredRun:
    """The checked contents of a run folder: config, metadata, scaler, weights (tensors by name), history."""

    folder: Path
    config: ForecastConfig
    meta: RunMeta
    scaler: dict[str, Any]
    state: dict[str, Any]
    backtest_state: dict[str, Any] | None
    history: list[Any]
    data: dict[str, str] | None = None  # manifest.json "data": the training file's path and sha256 (None: unknown)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_meta(cfg: ForecastConfig, prep: Prepared, model: LSTMForecaster, accel: Accel) -> RunMeta:
    import torch

    from lstmcast import __version__

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
        "last_time": [str(t[-1]) for t in s.times], "device": str(accel.device), "precision": accel.precision,
        "n_parameters": sum(p.numel() for p in model.parameters()), "mask_channel": bool(prep.mask_channel),
        "transform": cfg.data.transform, "scaling": prep.scaling_kind,
    })


def build_scaler(prep: Prepared) -> dict[str, Any]:
    return {"ids": list(prep.series.ids), "channels": prep.series.channel_names,
            "mean": prep.means, "std": prep.stds}


def save_run(fc: Forecaster, path: str | os.PathLike[str]) -> str:
    from safetensors.torch import save as st_save

    folder = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in fc.model_.state_dict().items()}
    files: dict[str, bytes] = {
        "config.yaml": fc.config_.to_yaml().encode(),
        "model.safetensors": st_save(sd, metadata={"format_version": str(FORMAT_VERSION)}),
        "scaler.json": json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                   for k, v in fc.scaler_.items()}, indent=2).encode(),
        "meta.json": json.dumps(fc.meta_.as_json(), indent=2).encode(),
    }
    backtest_model = getattr(fc, "backtest_model_", fc.model_)
    if backtest_model is not fc.model_:  # train.refit: the model the backtest comes from is kept beside it
        bsd = {k: v.detach().cpu().contiguous() for k, v in backtest_model.state_dict().items()}
        files[BACKTEST_MODEL] = st_save(bsd, metadata={"format_version": str(FORMAT_VERSION)})
    for name, data in files.items():
        atomic.write_bytes(folder / name, data)
    atomic.write_json(folder / "history.json", fc.history_)
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION,
                                "sha256": {n: sha256_bytes(d) for n, d in files.items()}}
    record = _data_record(fc)
    if record is not None:
        manifest["data"] = record
    atomic.write_json(folder / "manifest.json", manifest)
    return str(folder)


def _data_record(fc: Forecaster) -> dict[str, str] | None:
    """manifest.json "data": config.yaml's data.path and the sha256 of the bytes trained on, so that a later
    `predict RUN` without --data reads that file only while it is unchanged (see ``stored_data_path``)."""
    loaded = getattr(fc, "data_record_", None)
    if loaded is not None:  # a loaded run saved again: its record travels with it
        return dict(loaded)
    path = fc.config_.data.path
    if path is None or getattr(fc, "data_file_", None) != path:
        return None  # trained on a DataFrame, or on another file than data.path names
    return data_record(path)


def data_record(path: str | None) -> dict[str, str] | None:
    """``{"path", "sha256"}`` of a regular data file (None for none, a folder of Parquet files or a device):
    what lets a stored data.path be read again later (``stored_data_path``)."""
    if path is None or not os.path.isfile(path):
        return None
    return {"path": path, "sha256": file_sha256(path)}


def file_sha256(path: str | os.PathLike[str] | None) -> str | None:
    """sha256 of a regular file's bytes, read in 1 MB blocks (None without one): what identifies a data file
    across machines (run folders, tuning studies, evaluations, Spark outputs)."""
    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        raise ConfigError(f"the run folder's data.path {short_path(path)} was not recorded with its sha256 at training, "
                          "so it is not read (a path stored in a run folder is not trusted like one you type)"
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
    p = folder / name
    if not p.is_file():  # never opened: a FIFO would block, /dev/zero never ends
        raise CheckpointError(f"{folder} is not a complete lstmcast run folder: {name} {_not_a_file(p)}: retrain, "
                              "or restore the run folder from a backup")
    data = p.read_bytes()
    want = manifest.get("sha256", {}).get(name)
    if want is not None and sha256_bytes(data) != want:
        raise CheckpointError(f"{p} is corrupted or was changed after saving (sha256 mismatch with "
                              "manifest.json): retrain, or restore the file from a backup")
    return data


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_a_file(p: Path) -> str:
    """What stands at ``p`` instead of a regular file, in words ("is missing", "is a FIFO (named pipe)", "is a
    symbolic link to a character device (/dev/zero)")."""
    try:
        target = os.stat(p)
    except FileNotFoundError:
        return f"is a symbolic link to {cut(os.readlink(p), 100)!r}, which does not exist" if p.is_symlink() \
            else "is missing"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    kind = next((name for test, name in _KINDS if test(target.st_mode)), "not a regular file")
    if p.is_symlink():
        return f"is a symbolic link to {kind} ({cut(os.readlink(p), 100)}), not a regular file"
    return f"is {kind}, not a regular file"


def _json(data: bytes, name: str, kind: type = object) -> Any:
    return atomic.parse_json(data, name, kind, hint=": the run folder is damaged")


def _check_config_agrees(cfg: ForecastConfig, meta: dict[str, Any], folder: Path) -> None:
    """config.yaml and meta.json describe the same model: horizon always, window when the config fixed it."""
    d = cfg.data
    problems = [f"data.{key} is {want} in config.yaml but {meta[key]} in meta.json"
                for key, want in (("horizon", d.horizon), ("window", d.window)) if want is not None and want != meta[key]]
    if problems:
        raise CheckpointError(f"{folder} is damaged or was edited: " + "; ".join(problems) + ": retrain this run, "
                              "or restore the run folder from a backup")


def read_manifest(folder: Path) -> dict[str, Any]:
    if folder.suffix.lower() in UNSAFE_SUFFIXES:
        raise CheckpointError(f"{folder} is a pickle-based file ({folder.suffix}): lstmcast never unpickles (loading "
                              "a pickle can run arbitrary code); pass the run folder `lstmcast train` wrote")
    if not folder.is_dir():
        what = "is not a folder" if os.path.lexists(folder) else "does not exist"  # R14: x.csv exists
        raise CheckpointError(f"run folder {str(folder)!r} {what}: pass the run folder `lstmcast train` wrote "
                              "(it holds manifest.json); a data file goes to fit / predict / --data")
    unsafe = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in UNSAFE_SUFFIXES)
    if unsafe and not (folder / "model.safetensors").exists():
        raise CheckpointError(f"{folder} holds only pickle-based files {unsafe}: lstmcast never unpickles (loading "
                              "a pickle can run arbitrary code); it loads model.safetensors + JSON only")
    mpath = folder / "manifest.json"
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
                              "\"sha256\"" + _REMEDY)
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
    odd = [n for n, v in hashes.items() if n not in files and not (isinstance(v, str) and _HEX64.fullmatch(v))]
    if odd:
        problems.append(f"the sha256 of {short_list(odd)} is not 64 hex digits")
    if problems:
        raise CheckpointError(f"{mpath} is damaged or was edited: " + "; ".join(problems) + _REMEDY)


def read_run(path: str | os.PathLike[str]) -> StoredRun:
    """Read and check every file of a run folder (hashes, schemas, weights); build nothing. No pickle anywhere."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from lstmcast.config import validate_config, yaml_load_bytes

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
    return StoredRun(folder=folder, config=cfg, meta=RunMeta.model_validate(meta), scaler=scaler, state=state,
                     backtest_state=bstate, history=history, data=manifest.get("data"))
