"""A Forecaster's carried states (model.stateful, issue 24): where they come from, an update applied and kept,
forecasts from them and their files. ``Forecaster.update`` / ``predict_state`` / ``save_state`` /
``carried_states`` are thin calls into here; the maths (burn-in, checked updates, forecasts) is in
inference/stateful.py, the files in run/carried.py.

Each function gets the few values it needs (model, meta, scaler, folder), never the Forecaster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast.errors import ConfigError, DataError, short_list
from lstmcast.inference import stateful
from lstmcast.run.carried import CarriedStates, load_states, save_states
from lstmcast.run.folder import read_manifest

if TYPE_CHECKING:
    import os

    import numpy as np
    import pandas as pd

    from lstmcast.config import ForecastConfig
    from lstmcast.data.validate import SeriesSet
    from lstmcast.inference.stateful import UpdateSummary
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.run.meta import RunMeta

_LOCKS_GUARD = threading.Lock()


def require(cfg: ForecastConfig, what: str) -> None:
    """ConfigError, saying why, when ``what`` is asked of a model trained without ``model.stateful``."""
    if not bool(getattr(getattr(cfg, "model", None), "stateful", False)):
        raise ConfigError(f"{what}() needs a model trained with model.stateful: true (this one reads its last window "
                          "at every predict, from a zero state): retrain with model.stateful: true")


def update_lock(holder: Any) -> threading.Lock:
    """``holder``'s update lock (made once, under a module lock): concurrent updates of different series (a
    server's per-series locks) would otherwise each start from the same states and the last one win."""
    with _LOCKS_GUARD:
        lock = vars(holder).get("_update_lock")
        if lock is None:
            lock = vars(holder)["_update_lock"] = threading.Lock()
    return lock


def apply(model: LSTMForecaster, states: CarriedStates, series: SeriesSet, meta: RunMeta,
          scaler: dict[str, np.ndarray], folder: str | os.PathLike[str] | None) -> tuple[CarriedStates, UpdateSummary]:
    """The new states (a copy) after ``series``' new rows, and the summary; written into ``folder`` (a new
    generation) when given and a row was applied. ``states`` is left as it was (a predict meanwhile reads it)."""
    new, summary = stateful.update(model, states, series, meta, scaler)
    if folder is not None and summary.rows_applied:
        save(folder, new, meta)
    return new, summary


def carried(model: LSTMForecaster, meta: RunMeta, scaler: dict[str, np.ndarray],
            folder: str | os.PathLike[str] | None, history: Callable[[], SeriesSet] | None) -> CarriedStates:
    """The run folder's states (checked: CheckpointError naming the file), else a run over ``history()`` (the
    training data, when it is at hand), else no states yet."""
    states = None
    if folder is not None:
        m = model
        states = load_states(folder, model_sha(folder), m.num_layers * m.num_directions, m.hidden_size,
                             m.num_directions * m.hidden_size, len(stateful.channel_names(meta)),
                             stateful.time_kind(meta))
    if states is None and history is not None:
        states = stateful.burn_in(model, history(), meta, scaler)
    return states if states is not None else stateful.empty_states(model, meta)


def forecast(model: LSTMForecaster, states: CarriedStates, meta: RunMeta, cfg: ForecastConfig,
             ids: list[str] | None = None, future: Any = None) -> pd.DataFrame:
    """The forecast from the states of ``ids`` (None: every series), read, never changed; a series without a state
    is a DataError naming it."""
    if ids is not None:
        known = states.position()
        unknown = [s for s in ids if s not in known]
        if unknown:
            raise DataError(f"no carried state for series {short_list(unknown)}: send their rows to update first")
        states = states.subset(list(ids))
    return stateful.forecast(model, states, meta, future, cfg)


def fresh_forecast(model: LSTMForecaster, series: SeriesSet, meta: RunMeta, scaler: dict[str, np.ndarray],
                   cfg: ForecastConfig, future: Any = None) -> pd.DataFrame:
    """The forecast after a fresh run over ``series``' whole history (``predict(df)``; no carried state touched)."""
    return stateful.forecast(model, stateful.burn_in(model, series, meta, scaler), meta, future, cfg)


def save(folder: str | os.PathLike[str], states: CarriedStates, meta: RunMeta) -> None:
    """``states`` written into ``folder`` as its next generation (run/carried.py: atomic, checked on load)."""
    save_states(folder, states, model_sha(folder), stateful.time_kind(meta))


def model_sha(folder: str | os.PathLike[str]) -> str:
    """model.safetensors' sha256 as manifest.json records it: carried states belong to one model."""
    return str(read_manifest(Path(folder))["sha256"]["model.safetensors"])
