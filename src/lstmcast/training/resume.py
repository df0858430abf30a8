"""Resuming a run: which config it continues with, and the refusal when model or data changed (C4).

A resumed run takes the checkpoint's config; flags, ``--set`` and ``-c`` may change what does not
change the meaning of the saved state (max_epochs, patience, lr, checkpointing, the guard,
monitoring, evaluation, device, threads, the path of an identical data file). The architecture,
the columns, the frequency, window and horizon, the batch order (batch_size, loss) and the data
itself are compared, and every difference is named.

>>> config_diff({"model": {"hidden_size": 16}}, {"model": {"hidden_size": 32}})
['model.hidden_size: the checkpoint has 16, now 32']
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast.config import apply_overrides, read_yaml_mapping, validate_config
from lstmcast.errors import CheckpointError, ConfigError
from lstmcast.run.folder import data_record, stored_data_path
from lstmcast.training.checkpoint import Checkpoint, CheckpointStore

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig
    from lstmcast.data.prepare import Prepared

log = logging.getLogger(__name__)

# keys that may differ on resume; every other data.* / model.* key (and these train.* keys) may not
_FREE_DATA = {"data.path", "data.delimiter"}
_FIXED_TRAIN = {"train.batch_size", "train.loss", "train.max_steps_per_epoch",
                "train.windows_per_epoch", "train.val_windows"}
_RESOLVED_LATER = {"data.window", "data.season"}  # None (auto) resolves from the data: the fingerprint checks


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _fixed(key: str) -> bool:
    if key in _FREE_DATA:
        return False
    return key.startswith(("model.", "data.")) or key in _FIXED_TRAIN


def config_diff(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Differences in the keys a resumed run may not change, one readable line each."""
    a, b = _flatten(saved), _flatten(new)
    problems = []
    for key in sorted(set(a) | set(b)):
        if not _fixed(key) or a.get(key) == b.get(key):
            continue
        if key in _RESOLVED_LATER and b.get(key) is None:
            continue
        problems.append(f"{key}: the checkpoint has {a.get(key)!r}, now {b.get(key)!r}")
    return problems


def data_fingerprint(prep: Prepared) -> dict[str, Any]:
    """What identifies the training data: columns, layout, series, frequency, shape and a hash."""
    s = prep.series
    return {"targets": list(s.targets), "features": list(s.features), "layout": s.layout,
            "ids": [str(i) for i in s.ids], "freq": s.freq, "lengths": s.lengths(), "window": prep.window,
            "horizon": prep.horizon, "sha256": hashlib.sha256(prep.scaled.tobytes()).hexdigest()}


def check_same_data(saved: dict[str, Any], now: dict[str, Any], where: str) -> None:
    """Refuse to resume on other data, naming what differs (columns, frequency, series, values)."""
    problems = [f"data {k}: the checkpoint has {saved.get(k)!r}, now {now.get(k)!r}"
                for k in now if k != "sha256" and saved.get(k) != now.get(k)]
    if not problems and saved.get("sha256") != now.get("sha256"):
        problems.append("data values: same columns and length but different values (sha256 differs)")
    if problems:
        raise ConfigError(f"cannot resume {where} on different data (train on the data the run started with, "
                          "or start a new run):" + "".join(f"\n  - {p}" for p in problems))


def resume_config(run: str | os.PathLike[str], config: str | os.PathLike[str] | None = None,
                  data_flags: dict[str, Any] | None = None,
                  overrides: list[str] | None = None) -> tuple[ForecastConfig, Checkpoint]:
    """The config to continue ``run`` with and its newest good checkpoint; C4 differences refused."""
    store = CheckpointStore(run)
    ckpt = store.load_latest()
    saved = ckpt.meta["config"]
    try:
        validate_config(copy.deepcopy(saved))
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt.path}: the saved config is invalid ({exc})") from None
    raw = read_yaml_mapping(config) if config is not None else copy.deepcopy(saved)
    section = raw.setdefault("data", {})
    if isinstance(section, dict):
        section.update({k: v for k, v in (data_flags or {}).items() if v is not None})
    cfg = validate_config(apply_overrides(raw, list(overrides or [])))
    if config is None and not (data_flags or {}).get("path"):  # the data path is the checkpoint's: not typed
        record = ckpt.meta.get("data_file")
        stored_data_path(cfg.data.path, record if isinstance(record, dict) else None, Path(run))
    settled = ckpt.meta.get("precision")
    if cfg.train.precision == "auto" and settled in ("fp32", "tf32", "bf16", "fp16"):
        cfg.train.precision = settled  # a new probe could choose otherwise and break the exact continuation
    problems = config_diff(saved, cfg.to_dict())
    if problems:
        raise ConfigError(f"cannot resume {Path(run)} with a changed architecture or data settings (drop these "
                          "changes, or start a new run with them):" + "".join(f"\n  - {p}" for p in problems))
    return cfg, ckpt


def attach_run(trainer: Any, run_dir: str | os.PathLike[str] | None, resume_from: Checkpoint | None,
               config: dict[str, Any], prep: Prepared) -> None:
    """Give ``trainer`` its checkpoint store and, when resuming, the checkpoint's state (same data only)."""
    fingerprint = data_fingerprint(prep)
    # fit calls this only with a run folder or a checkpoint to resume from
    run = Path(run_dir) if run_dir is not None else resume_from.path.parent.parent  # type: ignore[union-attr]
    store = CheckpointStore(run)
    if resume_from is None and store.names():  # new checkpoints would interleave with (and be pruned by) old ones
        raise ConfigError(f"{run} holds checkpoints of another run: resume it (resume_from=CheckpointStore(run)."
                          "load_latest(), or `lstmcast train --resume`) or choose another run folder")
    if resume_from is not None:
        check_same_data(resume_from.meta["fingerprint"], fingerprint, str(run))
        settled = resume_from.meta.get("precision")
        if settled is not None and settled != trainer.accel.precision:
            log.warning("the checkpoint trained in %s, this run in %s: the continuation is not exact (set "
                        "train.precision=%s)", settled, trainer.accel.precision, settled)
        trainer.resume(resume_from)
        store.discard_newer_than(resume_from.step)
    # the data file's sha256: `--resume` without --data reads the stored data.path only while unchanged (R9)
    record = data_record(config.get("data", {}).get("path"))
    trainer.attach_checkpoints(store, {"config": config, "fingerprint": fingerprint, "data_file": record})
