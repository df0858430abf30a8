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
from typing import TYPE_CHECKING, Any

from lstmcast.model.build import build_model  # noqa: F401  (re-exported: the one config-to-module mapping)
from lstmcast.config import ForecastConfig, validate_config
from lstmcast.data.load import load_series  # noqa: F401  (re-exported)
from lstmcast.errors import NotFittedError

if TYPE_CHECKING:
    import pandas as pd

    from lstmcast.data.prepare import Prepared
    from lstmcast.data.validate import SeriesSet
    from lstmcast.inference.backtest import Backtest
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.checkpoint import Checkpoint
    from lstmcast.training.records import EpochRecord, StepView
    from lstmcast.training.world import World

log = logging.getLogger(__name__)
DataSource = "str | os.PathLike[str] | pd.DataFrame | None"


class Forecaster:
    """Train an LSTM forecaster on a table of series and forecast the next ``horizon`` steps.

    ``__init__`` only stores the config; ``fit`` validates everything and returns ``self``.
    Learned state ends in ``_``: ``model_``, ``meta_``, ``scaler_``, ``history_``.
    """

    def __init__(self, config: ForecastConfig | dict[str, Any] | None = None):
        self.config = config

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, data: Any = None, *,
            callbacks: list[Callable[[StepView, EpochRecord], None]] | None = None,
            run_dir: str | os.PathLike[str] | None = None, resume_from: Checkpoint | None = None,
            progress: bool | None = None) -> Forecaster:
        """Train on ``data``; with ``run_dir`` checkpoints go to RUN/checkpoints, ``resume_from`` continues one.

        ``progress``: True shows a bar (terminal, notebook) or a line per epoch, with the stages after
        training; False is silent; None (default) shows it where a person watches: a terminal or a notebook.
        """
        from contextlib import nullcontext

        from lstmcast.progress import EpochProgress, wanted

        callbacks = list(callbacks or [])
        own = None
        if not any(callable(getattr(cb, "stage", None)) for cb in callbacks) and wanted(progress):
            own = EpochProgress(validate_config(self.config).train.max_epochs,
                                start_epoch=resume_from.epoch if resume_from is not None else 0)
            callbacks.append(own)
        with own or nullcontext():
            return self._fit(data, callbacks, run_dir, resume_from)

    def _fit(self, data: Any, callbacks: list[Callable[[StepView, EpochRecord], None]],
             run_dir: str | os.PathLike[str] | None, resume_from: Checkpoint | None) -> Forecaster:
        import torch

        from lstmcast.progress import announce

        from lstmcast.training import fit as fitting
        from lstmcast.training.accel import resolve

        cfg = validate_config(self.config)
        if type(data).__name__ == "Series":  # pandas, imported only where data is a table
            data, cfg = _series_table(data, cfg)
        from lstmcast.training.distributed import join

        cfg, world = join(cfg)  # this process's place: Solo alone, a rank of a process group under torchrun
        # before any data is read
        accel = resolve(cfg.train.device, cfg.train.precision, cfg.train.threads, cfg.train.accel)
        fitting.seed_everything(cfg.train.seed)
        series, prep, ids = _read(data, cfg, world, accel.precision)
        resolved = fitting.resolve_config(cfg, prep, data, world.count(len(prep.index.train)))  # every rank's
        from lstmcast.doctor.report import preflight

        self.doctor_ = world.together(preflight, resolved, series, prep, accel)  # refuse errors, log advice
        from lstmcast.training.streaming import place_series

        tensor = place_series(torch.from_numpy(prep.scaled), accel.device)  # host memory if it cannot fit
        idx = prep.index
        val = _validation_windows(idx.val, resolved, world)
        train_idx, val_idx = (torch.from_numpy(i).to(tensor.device) for i in (idx.train, val))
        windows = fitting.train_data(prep, tensor, train_idx, val_idx)
        model, trainer, skip = fitting.train_first(resolved, accel, windows, prep, callbacks, run_dir, resume_from,
                                                   world)
        result = trainer.fit()
        self.trainer_ = trainer
        self.config_ = resolved
        self.backtest_model_ = self.model_ = model.cpu().eval()
        self.prepared_ = prep
        # the file trained on: save() records its sha256 when it is data.path (run/folder.py, FAULTS R9)
        self.data_file_ = os.fspath(data) if isinstance(data, (str, os.PathLike)) else \
            (resolved.data.path if data is None else None)
        self.coverage_ = _coverage(prep, idx.val)  # a table: how many series train, validate, are forecast
        self.history_ = [r.as_dict() for r in result.history]
        self.fit_result_ = result
        self.accel_ = accel = trainer.accel  # precision: auto is settled (measured) when the Trainer is built
        self.refit_: dict[str, int] | None = None
        if resolved.train.refit and not result.stop_reason.startswith("interrupted"):
            announce(callbacks, f"refit on every row ({result.best_epoch} epochs)")
            self.model_, self.refit_ = fitting.refit(resolved, accel, tensor, prep, result, skip, world)
        from lstmcast.run.folder import build_meta, build_scaler

        self.meta_ = build_meta(resolved, prep, self.model_, accel)
        self.meta_.refit = self.refit_  # None: model.safetensors is the backtested model itself
        self.meta_.world_size = world.world
        self.world_ = world  # the outputs: every rank's series gathered where sharded (inference/sharded.py)
        self.rank_ = world.rank
        if resolved.model.levels:
            from lstmcast.inference.intervals import calibrate

            announce(callbacks, "calibrating intervals")

            self.meta_.intervals = calibrate(resolved, self.backtest_model_, tensor, train_idx, val_idx, prep,
                                                skip)
        self.meta_, self.scaler_ = world.merge(self.meta_, build_scaler(prep), ids)  # sharded: every series'
        return self

    def _check_fitted(self, what: str) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(f"this Forecaster is not fitted yet: call .fit(data) (or lstmcast.load(run)) "
                                 f"before .{what}()")

    # -- inference ----------------------------------------------------------------------------
    def _series(self, data: Any, fast: bool = False) -> SeriesSet:
        if data is None and getattr(self, "prepared_", None) is not None:
            return self.prepared_.series
        if data is None and getattr(self, "run_folder_", None) is not None:  # loaded: data.path is not trusted
            from lstmcast.run.folder import stored_data_path

            data = stored_data_path(self.config_.data.path, self.data_record_, self.run_folder_)
        if type(data).__name__ == "Series" and self.meta_.layout == "single" and len(self.meta_.targets) == 1:
            from lstmcast.data.io import frame_of_series

            data = frame_of_series(data, self.meta_.time_col, self.meta_.targets[0])
        from lstmcast.inference.fastpath import fast_series
        from lstmcast.inference.predict import load_new_series

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
        from lstmcast.inference.predict import forecast_frame

        return forecast_frame(self.model_, self._series(data, fast=True), self.meta_, self.scaler_, future,
                              self.config_)

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
        from lstmcast.inference.steer import Plan, steered_backtest

        plan = Plan(start, stride, n_windows, refit)
        # train.refit: the model that never saw the test split (model_ was trained on all of it)
        model = getattr(self, "backtest_model_", self.model_)
        window = [0, 0]

        def on_window(k: int, n: int) -> None:
            window[:] = [k, n]
            log.info("backtest refit: training for window %d of %d", k, n)

        def fit(series: SeriesSet, cfg: ForecastConfig) -> tuple[LSTMForecaster, Any, dict[str, Any]]:
            return self._fit_window(series, cfg, f"window {window[0]} of {window[1]}")
        series = self._series(data)  # read and validated once: the backtest and its counts use it
        self.backtest_: Backtest = steered_backtest(model, series, self.meta_, self.scaler_,
                                                    self.config_, plan, fit=fit, on_window=on_window)
        if self.backtest_.covered:  # a table: the counts join the metrics (metrics.json "series")
            counts = dict(getattr(self, "coverage_", None) or {}) if data is None else {}
            self.backtest_.metrics["series"] = _with_backtested(counts, self.backtest_, series)
        return self.backtest_.metrics

    def backtest_forecasts(self, data: Any = None, *, start: Any = None, stride: int | None = None,
                           n_windows: int | None = None, refit: bool = False) -> pd.DataFrame:
        """Every window's forecasts as a DataFrame, one row per (series, window, step, target): series,
        target, cutoff (last observed time), origin, step, time, actual, model, naive, seasonal_naive and,
        with ``model.levels``, ``model_lo_80`` / ``model_hi_80`` ... Arguments as ``backtest``; at the
        defaults these are the rows of RUN/backtest.csv.

        >>> fc.backtest_forecasts(start="2024-03-01", stride=24).head()           # doctest: +SKIP
        """
        series = self._series(data)  # read once: both the backtest and its frame use it
        self.backtest(series, start=start, stride=stride, n_windows=n_windows, refit=refit)
        return self.backtest_.frame(series, self.meta_)

    @staticmethod
    def _fit_window(series: SeriesSet, cfg: ForecastConfig, label: str) -> tuple[LSTMForecaster, Any, dict[str, Any]]:
        """A refit backtest window's model, trained on ``series`` alone; its progress labelled ``label`` where a
        person watches (a terminal or a notebook)."""
        from contextlib import nullcontext

        from lstmcast.progress import EpochProgress, wanted

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
        self._check_fitted("save")
        from pathlib import Path

        from lstmcast.run.folder import save_run

        folder = save_run(self, path)
        if outputs and getattr(self, "prepared_", None) is None and not self.config_.data.path:
            log.warning("%s: model files only: this Forecaster holds no training data to backtest and forecast "
                        "(loaded from a folder fitted on a DataFrame); outputs need fit(data) first", folder)
        elif outputs:
            from lstmcast.outputs import write_all

            write_all(self, Path(folder))
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Forecaster:
        return load_run(path)

    @property
    def model(self) -> LSTMForecaster:
        self._check_fitted("model")
        return self.model_

    @property
    def prepared(self) -> Prepared | None:
        return getattr(self, "prepared_", None)


def _series_table(data: Any, cfg: ForecastConfig) -> tuple[Any, ForecastConfig]:
    """A pandas Series (DatetimeIndex) as a two-column table, and the config naming its columns."""
    from lstmcast.data.io import frame_of_series

    d = cfg.data
    target = d.target[0] if len(d.target) == 1 else None
    if len(d.target) > 1 or d.features or d.future_features or d.id_col:
        from lstmcast.errors import DataError

        raise DataError("a pandas Series is one series of one target: for several targets, covariates or series "
                        "pass a DataFrame with those columns")
    frame = frame_of_series(data, d.time_col, target)
    time_col, value = (str(c) for c in frame.columns)
    return frame, cfg.model_copy(update={"data": d.model_copy(update={"time_col": time_col, "target": [value]})})


def _read(data: Any, cfg: ForecastConfig, world: World, precision: str) -> tuple[SeriesSet, Prepared, list[str]]:
    """(series, prepared, every id of the dataset): sharded, this rank's own series only, with window and
    channels agreed among the ranks."""
    from lstmcast.data.prepare import prepare

    series, ids = world.read(data, cfg)
    prep = world.together(prepare, series, cfg.data, precision, cfg.model.id_embedding)
    return series, world.agree(prep, cfg, precision), ids


def _coverage(prep: Prepared, val: Any) -> dict[str, Any] | None:
    """data.coverage.series_counts of a table's fit (None for one series)."""
    from lstmcast.data.prepare import is_panel

    if not is_panel(prep.series.layout, len(prep.series.ids)):
        return None
    from lstmcast.data.coverage import series_counts

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
    import torch

    from lstmcast.data.inputs import InputSpec
    from lstmcast.errors import CheckpointError, LstmcastError
    from lstmcast.run.folder import BACKTEST_MODEL, read_run

    stored = read_run(path)
    cfg, meta, folder = stored.config, stored.meta, stored.folder

    def build(state: dict[str, Any]) -> LSTMForecaster:
        with torch.device("meta"):  # shapes only: the weights come from the file (assign=True), nothing allocated
            model = build_model(cfg.model, meta.input_size, meta.n_targets, meta.horizon, meta.window,
                                **InputSpec.from_dict(meta.inputs_dict()).model_sizes())
        model.load_state_dict(state, assign=True)
        return model.eval()
    try:
        model = build(stored.state)
        backtest_model = build(stored.backtest_state) if stored.backtest_state is not None else model
    except (KeyError, TypeError, ValueError, RuntimeError, LstmcastError) as exc:
        which = BACKTEST_MODEL if "model" in locals() else "model.safetensors"
        raise CheckpointError(f"{folder}: the files do not fit together ({which}: {exc}): retrain this run") from None
    fc = Forecaster(cfg)
    fc.config_, fc.model_, fc.meta_, fc.scaler_ = cfg, model, meta, stored.scaler
    fc.backtest_model_ = backtest_model
    fc.prepared_ = None
    fc.history_ = stored.history
    fc.run_folder_, fc.data_record_ = folder, stored.data  # predict(None) reads data.path only if unchanged
    return fc
