"""Forecaster: the sklearn-like facade. fit / predict / backtest / save / load.

>>> from lstmcast import Forecaster
>>> fc = Forecaster({"data": {"time_col": "date", "target": "co2", "horizon": 52,
...                           "missing": "interpolate"}})          # doctest: +SKIP
>>> fc.fit("co2.csv").predict().head()                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast.config import ForecastConfig, validate_config
from lstmcast.data.coverage import series_counts
from lstmcast.data.io import frame_of_series
from lstmcast.data.prepare import is_panel, prepare
from lstmcast.doctor.report import preflight
from lstmcast.errors import ConfigError, DataError, NotFittedError
from lstmcast.inference.fastpath import fast_series
from lstmcast.inference.intervals import calibrate
from lstmcast.inference.local import local_combination
from lstmcast.inference.predict import forecast_frame, load_new_series
from lstmcast.inference.steer import Plan, steered_backtest
from lstmcast.outputs import TrainingReport, write_all
from lstmcast.progress import EpochProgress, announce, wanted
from lstmcast.run.folder import (
    build_meta,
    build_scaler,
    data_record,
    read_run,
    save_run,
    stored_data_path,
)
from lstmcast.run.record import FittedRun
from lstmcast.training import fit as fitting

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.data.prepare import Prepared
    from lstmcast.data.validate import SeriesSet
    from lstmcast.doctor.diagnosis import Diagnosis
    from lstmcast.inference.backtest import Backtest
    from lstmcast.inference.stateful import UpdateSummary
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.run.carried import CarriedStates
    from lstmcast.run.meta import RunMeta
    from lstmcast.training.checkpoint import Checkpoint
    from lstmcast.training.records import EpochRecord, StepView
    from lstmcast.training.world import World

log = logging.getLogger(__name__)
DataSource = "str | os.PathLike[str] | pd.DataFrame | None"


class Forecaster:
    """Train an LSTM forecaster on a table of series and forecast the next ``horizon`` steps.

    ``__init__`` only stores the config; ``fit`` validates everything and returns ``self``.
    Learned state ends in ``_``: the run record ``run_`` (what the run folder holds: ``config_``, ``model_``,
    ``backtest_model_``, ``meta_``, ``scaler_``, ``history_`` read from it), ``training_`` (what ``fit`` learned
    beyond it; None for a run loaded from its folder), the last ``backtest_`` and the outputs' ``diagnosis_``.
    """

    config: ForecastConfig | dict[str, Any] | None  # as given; ``fit`` validates it
    run_: FittedRun | None  # set by fit and lstmcast.load; None before
    training_: TrainingReport | None  # set by fit: trainer, result, doctor, data; None when loaded
    backtest_: Backtest | None  # the last backtest (backtest, backtest_forecasts, the run folder's outputs)
    diagnosis_: Diagnosis | None  # the learning-curve diagnosis, written with the run folder's outputs

    def __init__(self, config: ForecastConfig | dict[str, Any] | None = None):
        self.config = config
        self.run_ = None
        self.training_ = None
        self.backtest_ = None
        self.diagnosis_ = None

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, data: Any = None, *,
            callbacks: list[Callable[[StepView, EpochRecord], None]] | None = None,
            run_dir: str | os.PathLike[str] | None = None, resume_from: Checkpoint | None = None,
            progress: bool | None = None) -> Forecaster:
        """Train on ``data``; with ``run_dir`` checkpoints go to RUN/checkpoints, ``resume_from`` continues one.

        ``progress``: True shows a bar (terminal, notebook) or a line per epoch, with the stages after
        training; False is silent; None (default) shows it where a person watches: a terminal or a notebook.
        """
        callbacks = list(callbacks or [])
        own = None
        if not any(callable(getattr(cb, "stage", None)) for cb in callbacks) and wanted(progress):
            own = EpochProgress(validate_config(self.config).train.max_epochs,
                                start_epoch=resume_from.epoch if resume_from is not None else 0)
            callbacks.append(own)
        from lstmcast.training.accel import caller_threads

        with own or nullcontext(), caller_threads():  # train.threads holds for training, not after it
            return self._fit(data, callbacks, run_dir, resume_from)

    def _fit(self, data: Any, callbacks: list[Callable[[StepView, EpochRecord], None]],
             run_dir: str | os.PathLike[str] | None, resume_from: Checkpoint | None) -> Forecaster:
        import torch

        from lstmcast.training.accel import keep_freed_memory, resolve

        cfg = validate_config(self.config)
        if type(data).__name__ == "Series":  # pandas, imported only where data is a table
            data, cfg = _series_table(data, cfg)
        from lstmcast.training.distributed import join

        cfg, world = join(cfg)  # this process's place: Solo alone, a rank of a process group under torchrun
        # before any data is read
        accel = resolve(cfg.train.device, cfg.train.precision, cfg.train.threads, cfg.train.accel)
        keep_freed_memory(cfg.train.allocator)
        fitting.seed_everything(cfg.train.seed)
        series, prep, ids = _read(data, cfg, world, accel.precision)
        resolved = fitting.resolve_config(cfg, prep, data, world.count(len(prep.index.train)),  # every rank's
                                          world.sharded)
        doctor = world.together(preflight, resolved, series, prep, accel)  # refuse errors, log advice
        from lstmcast.training.streaming import place_series

        tensor = place_series(torch.from_numpy(prep.scaled), accel.device)  # host memory if it cannot fit
        idx = prep.index
        val = _validation_windows(idx.val, resolved, world)
        train_idx, val_idx = (torch.from_numpy(i).to(tensor.device) for i in (idx.train, val))
        windows = fitting.train_data(prep, tensor, train_idx, val_idx)
        model, trainer, skip = fitting.train_first(resolved, accel, windows, prep, callbacks, run_dir, resume_from,
                                                   world)
        result = trainer.fit()
        backtest_model = model = model.cpu().eval()
        accel = trainer.accel  # precision: auto is settled (measured) when the Trainer is built
        refit: dict[str, int] | None = None
        if resolved.train.refit and not result.stop_reason.startswith("interrupted"):
            announce(callbacks, f"refit on every row ({result.best_epoch} epochs)")
            model, refit = fitting.refit(resolved, accel, tensor, prep, result, skip, world)
        meta = build_meta(resolved, prep, model, str(accel.device), accel.precision)
        meta.refit = refit  # None: model.safetensors is the backtested model itself
        meta.world_size = world.world
        meta.local = local_combination(resolved, backtest_model, tensor, val_idx, prep, world.gather)
        if resolved.model.levels:
            announce(callbacks, "calibrating intervals")

            meta.intervals = calibrate(resolved, backtest_model, tensor, train_idx, val_idx, prep, skip)
        meta, scaler = world.merge(meta, build_scaler(prep), ids)  # sharded: every rank's series in the record
        self.run_ = FittedRun(config=resolved, model=model, backtest_model=backtest_model, meta=meta, scaler=scaler,
                              history=[r.as_dict() for r in result.history])
        # the file trained on: save() records its sha256 when it is data.path (run/folder.py, FAULTS R9)
        data_file = os.fspath(data) if isinstance(data, (str, os.PathLike)) else \
            (resolved.data.path if data is None else None)
        self.training_ = TrainingReport(
            trainer=trainer, result=result, accel=accel, prepared=prep, doctor=doctor,
            coverage=_coverage(prep, idx.val),  # a table: how many series train, validate, are forecast
            data_file=data_file, world=world)  # world.sharded: the outputs gather every rank's series
        return self

    def _fitted(self, what: str) -> FittedRun:
        """The run record; NotFittedError (an AttributeError: ``hasattr(fc, "model_")`` is False) before fit."""
        if self.run_ is None:
            raise NotFittedError(f"this Forecaster is not fitted yet: call .fit(data) (or lstmcast.load(run)) "
                                 f"before .{what}()")
        return self.run_

    def _check_fitted(self, what: str) -> None:
        self._fitted(what)

    # -- the run record, read by attribute (sklearn's fitted attributes) -------------------------
    @property
    def config_(self) -> ForecastConfig:
        """The resolved config (every "auto" settled): config.yaml of the run folder."""
        return self._fitted("config_").config

    @property
    def model_(self) -> LSTMForecaster:
        """The model that forecasts (with train.refit: trained on every row)."""
        return self._fitted("model_").model

    @property
    def backtest_model_(self) -> LSTMForecaster:
        """The model every backtest number comes from: ``model_`` itself unless train.refit trained another."""
        return self._fitted("backtest_model_").backtest_model

    @property
    def meta_(self) -> RunMeta:
        return self._fitted("meta_").meta

    @property
    def scaler_(self) -> dict[str, Any]:
        return self._fitted("scaler_").scaler

    @property
    def history_(self) -> list[dict[str, Any]]:
        """One record an epoch: losses, learning rate, time."""
        return self._fitted("history_").history

    @property
    def prepared_(self) -> Prepared | None:
        """The data ``fit`` trained on (scaled table, splits, windows); None for a run loaded from its folder."""
        return self.training_.prepared if self.training_ is not None else None

    # -- inference ----------------------------------------------------------------------------
    def series(self, data: Any = None, fast: bool = False) -> SeriesSet:
        """``data`` read and validated as the model needs it (a path, DataFrame, pandas Series or SeriesSet);
        ``None``: the data ``fit`` trained on, or for a loaded run its recorded data.path while that file is
        unchanged (else ConfigError asking for data). ``fast``: read only the last window rows where the model
        has no covariates (predict)."""
        run = self._fitted("series")
        if data is None and self.training_ is not None:
            return self.training_.prepared.series
        if data is None and run.folder is not None:  # loaded: data.path is not trusted
            data = stored_data_path(run.config.data.path, run.data, run.folder)
        if type(data).__name__ == "Series" and self.meta_.layout == "single" and len(self.meta_.targets) == 1:
            data = frame_of_series(data, self.meta_.time_col, self.meta_.targets[0])
        inputs = self.meta_.inputs
        simple = not self.meta_.future_features and not (inputs and (inputs.static_numeric or inputs.static_categorical
                                                                      or inputs.id_vocabulary is not None))
        if fast and simple and type(data).__name__ == "DataFrame":  # predict reads only the last window rows
            cfg = self.config_
            clean = fast_series(data, self.meta_, cfg.train.precision == "fp16" and cfg.data.scaling == "none")
            if clean is not None:
                return clean
        return load_new_series(data, self.config_, self.meta_)  # D13: says what the model needs

    def predict(self, data: Any = None, future: Any = None) -> pd.DataFrame:
        """Forecast the next ``horizon`` steps after the end of each series, in original units.

        ``data``: a path or DataFrame with the training columns and at least ``window`` recent rows
        per series (a series the model never saw is forecast from its own rows); ``None`` forecasts from
        the end of the training data. ``future``: a path or DataFrame with time [+ id] and the
        ``data.future_features`` columns for the ``horizon`` steps after each series' last time (required
        when the model was trained with known-future covariates).
        """
        self._check_fitted("predict")
        if self._stateful():  # model.stateful: from the carried states, or a fresh run over ``data``'s history
            return self._stateful_predict(data, future)
        return forecast_frame(self.model_, self.series(data, fast=True), self.meta_, self.scaler_, future,
                              self.config_)

    # -- the carried state (model.stateful, issue 24; the bodies in inference/stream.py) ------------------
    def update(self, new_rows: Any, *, persist: bool = True) -> UpdateSummary:
        """Advance each series' carried state by its new observations only, one LSTM step per row.

        ``new_rows``: a path or DataFrame in predict's input layout. Rows at or before a series' last seen time
        are ignored (an update repeated is a no-op); a series never seen starts from a zero state over the rows
        given. A gap, an out-of-order or a non-finite row is a DataError naming the series and rows, and nothing
        is applied. A Forecaster loaded from a run folder writes the new states there (``persist``).

        >>> fc.update(new_rows)          # UpdateSummary(series_updated=2, rows_applied=2, ...)  # doctest: +SKIP
        """
        self._check_fitted("update")
        self._stateful(required="update")
        from lstmcast.inference import stateful, stream

        series = stateful.read_update(new_rows, self.config_, self.meta_)
        with stream.update_lock(self):  # one update at a time: each reads the states the last one left (threads)
            # predict() meanwhile reads the previous states, whole
            self.states_, summary = stream.apply(self.model_, self.carried_states(), series, self.meta_,
                                                 self.scaler_, self._folder() if persist else None)
        return summary

    def predict_state(self, ids: list[str] | None = None, future: Any = None) -> pd.DataFrame:
        """The forecast from the carried states of ``ids`` (default every series), as ``predict()``; the states
        are read, never changed (``lstmcast serve`` forecasts a stateful model's series so). A series without
        a state is a DataError naming it."""
        self._stateful(required="predict_state")
        from lstmcast.inference import stream

        return stream.forecast(self.model_, self.carried_states(), self.meta_, self.config_, ids, future)

    def save_state(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the carried states (atomically, a new generation) into ``path`` or the run folder this
        Forecaster was loaded from (``lstmcast serve`` snapshots them so)."""
        from lstmcast.inference import stream

        folder = path if path is not None else self._folder()
        if folder is None:
            raise ConfigError("save_state() needs a run folder: this Forecaster was not loaded from one (pass path=)")
        stream.save(folder, self.carried_states(), self.meta_)

    def carried_states(self) -> CarriedStates:
        """The carried states: the last update's, else the run folder's, else a run over the training data."""
        self._stateful(required="carried_states")
        states = getattr(self, "states_", None)
        if states is not None:
            return states
        from lstmcast.inference import stream

        folder = self._folder()
        history = self.prepared_ is not None or (folder is not None and self.config_.data.path)
        self.states_ = stream.carried(self.model_, self.meta_, self.scaler_, folder,
                                      (lambda: self.series(None)) if history else None)
        return self.states_

    def _stateful(self, required: str | None = None) -> bool:
        if required:
            from lstmcast.inference.stream import require

            require(self.config_, required)
        return bool(getattr(getattr(self.config_, "model", None), "stateful", False))

    def _stateful_predict(self, data: Any, future: Any) -> pd.DataFrame:
        from lstmcast.inference import stream

        if data is None:
            return stream.forecast(self.model_, self.carried_states(), self.meta_, self.config_, None, future)
        # a fresh run over the history given; the carried states are not touched
        return stream.fresh_forecast(self.model_, self.series(data), self.meta_, self.scaler_, self.config_, future)

    def _folder(self) -> Path | None:
        """The run folder this Forecaster was loaded from (None: fitted here, or not yet saved)."""
        return self.run_.folder if self.run_ is not None else None

    @property
    def trained(self) -> TrainingReport:
        """What ``fit`` learned beyond the run record; NotFittedError for a run loaded from its folder."""
        if self.training_ is None:
            raise NotFittedError("this Forecaster was not fitted in this process (a loaded run keeps no training "
                                 "report): call .fit(data)")
        return self.training_

    @property
    def last_backtest(self) -> Backtest:
        """The windows of the last ``backtest()`` (every forecast, actual and origin); NotFittedError before one."""
        if self.backtest_ is None:
            raise NotFittedError("no backtest has run on this Forecaster yet: call .backtest() first")
        return self.backtest_

    def backtest(self, data: Any = None, *, start: Any = None, stride: int | None = None,
                 n_windows: int | None = None, refit: bool = False) -> dict[str, dict[str, float]]:
        """Rolling-origin backtest; metrics for the model and both baselines. The windows (``fc.backtest_``,
        every forecast in ``backtest_forecasts``) by default are the test split's, as ``train`` scored them.

        ``start``: the first window's first forecast step: a time, a row position (a time on integer-time
        data) or a fraction of each series, e.g. 0.5; ``stride``: steps between windows (default
        ``eval.stride``, else the horizon); ``n_windows``: at most this many a series (default
        ``eval.max_origins``; with ``start``: all); ``refit``: retrain the model before each window on the
        rows before it (one training per window), as Darts' ``retrain`` / NeuralForecast's ``refit``.

        >>> fc.backtest(start=0.6, stride=24, n_windows=5)["model"]["MASE"]        # doctest: +SKIP
        """
        self._check_fitted("backtest")
        plan = Plan(start, stride, n_windows, refit)
        # train.refit: the model that never saw the test split (model_ was trained on all of it)
        model = self.backtest_model_
        window = [0, 0]

        def on_window(k: int, n: int) -> None:
            window[:] = [k, n]
            log.info("backtest refit: training for window %d of %d", k, n)

        def fit(series: SeriesSet, cfg: ForecastConfig) -> tuple[LSTMForecaster, Any, dict[str, Any]]:
            return self._fit_window(series, cfg, f"window {window[0]} of {window[1]}")
        series = self.series(data)  # read and validated once: the backtest and its counts use it
        bt = steered_backtest(model, series, self.meta_, self.scaler_, self.config_, plan, fit=fit,
                              on_window=on_window)
        self.backtest_ = bt
        if bt.covered:  # a table: the counts join the metrics (metrics.json "series")
            coverage = self.training_.coverage if self.training_ is not None else None
            counts = dict(coverage or {}) if data is None else {}
            bt.metrics["series"] = _with_backtested(counts, bt, series)
        return bt.metrics

    def backtest_forecasts(self, data: Any = None, *, start: Any = None, stride: int | None = None,
                           n_windows: int | None = None, refit: bool = False) -> pd.DataFrame:
        """Every window's forecasts as a DataFrame, one row per (series, window, step, target): series,
        target, cutoff (last observed time), origin, step, time, actual, model, naive, seasonal_naive and,
        with ``model.levels``, ``model_lo_80`` / ``model_hi_80`` ... Arguments as ``backtest``; at the
        defaults these are the rows of RUN/backtest.csv.

        >>> fc.backtest_forecasts(start="2024-03-01", stride=24).head()           # doctest: +SKIP
        """
        series = self.series(data)  # read once: both the backtest and its frame use it
        self.backtest(series, start=start, stride=stride, n_windows=n_windows, refit=refit)
        return self.last_backtest.frame(series, self.meta_)

    @staticmethod
    def _fit_window(series: SeriesSet, cfg: ForecastConfig, label: str) -> tuple[LSTMForecaster, Any, dict[str, Any]]:
        """A refit backtest window's model, trained on ``series`` alone; its progress labelled ``label`` where a
        person watches (a terminal or a notebook)."""
        bar = EpochProgress(cfg.train.max_epochs, label=label) if wanted(None) else None
        with bar or nullcontext():
            fc = Forecaster(cfg).fit(series, callbacks=[bar] if bar else None, progress=False)
        return fc.backtest_model_, fc.meta_, fc.scaler_

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], outputs: bool = True) -> str:
        """Write the run folder `lstmcast train` writes: the model files (config.yaml, model.safetensors,
        scaler.json, meta.json, history.json, manifest.json) and, with ``outputs``, the backtest
        (metrics.json, backtest.csv), forecast.csv, plots, diagnosis.json, report.html and complete.json,
        from the data it was fitted on (or ``data.path``), so `lstmcast report PATH` shows the whole run.

        >>> fc.save("runs/load")          # then: lstmcast report runs/load            # doctest: +SKIP
        """
        run = self._fitted("save")
        folder = save_run(path, run.stored(data=self._trained_file_record()))
        if self._stateful():  # the carried states beside the model (run/carried.py)
            self.save_state(folder)
        if outputs and self.training_ is None and not run.config.data.path:
            log.warning("%s: model files only: this Forecaster holds no training data to backtest and forecast "
                        "(loaded from a folder fitted on a DataFrame); outputs need fit(data) first", folder)
        elif outputs:
            write_all(self, Path(folder))
        return folder

    def _trained_file_record(self) -> dict[str, str] | None:
        """manifest.json "data" of a model fitted here: config.yaml's data.path and the sha256 of the bytes
        trained on, so that a later `predict RUN` without --data reads that file only while it is unchanged
        (``stored_data_path``); None when it was trained on a DataFrame or on another file than data.path names.
        A loaded run keeps the record it was read with (``FittedRun.stored``)."""
        path = self._fitted("save").config.data.path
        trained = self.training_.data_file if self.training_ is not None else None
        # config.yaml stores data.path absolute while the file trained on is the path as given (often relative)
        if path is None or trained is None or os.path.abspath(trained) != os.path.abspath(path):
            return None
        return data_record(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Forecaster:
        return load_run(path)

    @property
    def model(self) -> LSTMForecaster:
        return self._fitted("model").model

    @property
    def prepared(self) -> Prepared | None:
        return self.prepared_


def _series_table(data: Any, cfg: ForecastConfig) -> tuple[Any, ForecastConfig]:
    """A pandas Series (DatetimeIndex) as a two-column table, and the config naming its columns."""
    d = cfg.data
    target = d.target[0] if len(d.target) == 1 else None
    if len(d.target) > 1 or d.features or d.future_features or d.id_col:
        raise DataError("a pandas Series is one series of one target: for several targets, covariates or series "
                        "pass a DataFrame with those columns")
    frame = frame_of_series(data, d.time_col, target)
    time_col, value = (str(c) for c in frame.columns)
    return frame, cfg.model_copy(update={"data": d.model_copy(update={"time_col": time_col, "target": [value]})})


def _read(data: Any, cfg: ForecastConfig, world: World, precision: str) -> tuple[SeriesSet, Prepared, list[str]]:
    """(series, prepared, every id of the dataset): sharded, this rank's own series only, with window and
    channels agreed among the ranks."""
    series, ids = world.read(data, cfg)
    prep = world.together(prepare, series, cfg.data, precision, cfg.model.id_embedding)
    return series, world.agree(prep, cfg, precision), ids


def _coverage(prep: Prepared, val: Any) -> dict[str, Any] | None:
    """data.coverage.series_counts of a table's fit (None for one series)."""
    if not is_panel(prep.series.layout, len(prep.series.ids)):
        return None
    return series_counts(prep.series.ids, prep.splits, prep.window, prep.horizon, prep.index.train, val,
                         prep.index.offsets, prep.pads)


def _with_backtested(counts: dict[str, Any], bt: Backtest, series: SeriesSet) -> dict[str, Any]:
    """The "series" record: the fit's counts (when the backtest ran on the training data) and the backtest's."""
    out = {"total": len(series.ids), **{k: v for k, v in counts.items() if k != "total"}}
    out["backtested"] = bt.covered
    return out


def _validation_windows(val: Any, cfg: ForecastConfig, world: World) -> Any:
    """train.val_windows of the validation windows (sharded: this rank's share of the cap from its own series,
    each rank's sample from its own seed)."""
    from lstmcast.training.sampling import validation_sample

    cap, seed = world.validation_sample(cfg.train.val_windows, cfg.train.seed)
    return validation_sample(val, cap, seed)


def load_run(path: str | os.PathLike[str]) -> Forecaster:
    """Rebuild a fitted Forecaster from a run folder (``lstmcast.load``): files checked, models built."""
    run = FittedRun.from_stored(read_run(path))
    fc = Forecaster(run.config)
    fc.run_ = run  # predict(None) reads its data.path only while unchanged (run.data)
    return fc
