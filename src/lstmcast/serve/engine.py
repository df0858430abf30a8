"""The served model: one Forecaster loaded once, request tables checked as `predict` checks them, and many
requests' series forecast in one forward.

A request's rows become a ``SeriesSet`` the way ``Forecaster.predict`` reads a DataFrame (the numpy fast path for
a clean single series, else the general validation whose DataErrors the CLI prints), so a bad request gets the
CLI's message. Requests of a window model without known-future or static inputs are merged into one
``SeriesSet`` and forecast by one ``inference.predict.forecast_frame`` call (one forward); its rows are cut back
into each request's rows (``horizon`` rows per series, in series order). A batch that fails (one request's data
overflows the model, say) is forecast request by request, so each caller gets its own answer or error.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lstmcast.data.validate import SeriesSet
from lstmcast.errors import LstmcastError
from lstmcast.forecaster import Forecaster
from lstmcast.inference.fastpath import fast_arrays, fast_series
from lstmcast.inference.predict import forecast_frame, load_new_series
from lstmcast.training.accel import available_cores, check_threads

if TYPE_CHECKING:
    from lstmcast.run.meta import RunMeta
    from lstmcast.serve.bodies import Tables


@dataclass
class Request:
    """One forecast request, checked: its series and, for a model with known-future covariates, its future."""

    series: SeriesSet
    future: pd.DataFrame | None = None


@dataclass
class Table:
    """A request's forecast rows as columns (the layout ``predict`` returns), cut from a batch without building a
    DataFrame per request."""

    columns: list[str]
    arrays: list[np.ndarray]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Table:
        return cls([str(c) for c in frame.columns], [frame[c].to_numpy() for c in frame.columns])

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(dict(zip(self.columns, self.arrays)))


class Engine:
    """The run's Forecaster (``lstmcast.load``: every file's hash checked) and the batched forward."""

    def __init__(self, run: str | os.PathLike[str], threads: int | None = None):
        self.run = os.fspath(run)
        self.fc = Forecaster.load(run)  # CheckpointError (exit 4) on a tampered or broken run folder
        self.meta: RunMeta = self.fc.meta_
        self.config = self.fc.config_
        self.threads = check_threads(threads) if threads else (self.config.train.threads or available_cores())
        self.warm = False
        inputs = self.meta.inputs
        self._simple = not self.meta.future_features and not (inputs and (
            inputs.static_numeric or inputs.static_categorical or inputs.id_vocabulary is not None))
        self._fp16_unscaled = self.config.train.precision == "fp16" and self.config.data.scaling == "none"

    # -- per request ---------------------------------------------------------------------------
    def check(self, rows: pd.DataFrame, future: pd.DataFrame | None) -> Request:
        """``rows`` read and validated against the model as `predict` does (DataError / ShapeError on bad data)."""
        if self._simple and future is None:  # a future frame for a model without covariates: forecast_frame refuses it
            clean = fast_series(rows, self.meta, self._fp16_unscaled)
            if clean is not None:
                return Request(clean)
        return Request(load_new_series(rows, self.config, self.meta), future)

    def check_tables(self, tables: Tables) -> Request:
        """A body's tables checked as ``check`` does; a JSON body's clean single series goes from its columns to the
        model's arrays (``fast_series``'s checks on the same arrays, no DataFrame), anything else through ``check``."""
        cols, meta = tables.columns, self.meta
        if cols is not None and self._simple and tables.future is None and meta.layout == "single":
            times = cols.get(meta.time_col)
            values = [cols.get(c) for c in (*meta.targets, *meta.features)]
            if isinstance(times, np.ndarray) and all(isinstance(v, np.ndarray) for v in values):
                clean = fast_arrays(times, values, meta, self._fp16_unscaled)
                if clean is not None:
                    return Request(clean)
        return self.check(tables.rows, tables.future)

    def mergeable(self, req: Request) -> bool:
        """Whether ``req`` may share a forward with others: no known-future frame (read per series id), no static
        table, not the wide layout (a column per series)."""
        return req.future is None and req.series.static is None and self.meta.layout != "wide" \
            and not self.meta.future_features

    # -- the model thread ----------------------------------------------------------------------
    def set_threads(self) -> None:
        """Torch threads as training sets them (train.threads, else the cores this process may use)."""
        import torch

        torch.set_num_threads(self.threads)

    def forecast(self, req: Request) -> Table:
        return Table.of(forecast_frame(self.fc.model_, req.series, self.meta, self.fc.scaler_, req.future,
                                       self.config))

    def forecast_many(self, reqs: list[Request]) -> list[Table | BaseException]:
        """Each request's forecast table (or the error it raised): mergeable requests in one forward."""
        out: list[Table | BaseException | None] = [None] * len(reqs)
        merged = [i for i, r in enumerate(reqs) if self.mergeable(r)]
        if len(merged) > 1:
            try:
                for i, frame in zip(merged, self._one_forward([reqs[i] for i in merged])):
                    out[i] = frame
            except LstmcastError:
                pass  # one request's data broke the batch: each is forecast alone below, with its own error
        for i, r in enumerate(reqs):
            if out[i] is None:
                try:
                    out[i] = self.forecast(r)
                except LstmcastError as exc:
                    out[i] = exc
        return out  # type: ignore[return-value]

    def _one_forward(self, reqs: list[Request]) -> list[Table]:
        """The requests' series as one SeriesSet through one forecast_frame; the table cut back per request."""
        first = reqs[0].series
        sets = [r.series for r in reqs]
        merged = SeriesSet(ids=[i for s in sets for i in s.ids], times=[t for s in sets for t in s.times],
                           values=[v for s in sets for v in s.values], targets=first.targets,
                           features=first.features, freq=first.freq, time_col=first.time_col, id_col=first.id_col,
                           layout=first.layout, tz=first.tz, future_features=first.future_features,
                           integer_time=first.integer_time)
        table = forecast_frame(self.fc.model_, merged, self.meta, self.fc.scaler_, None, self.config)
        H = self.meta.horizon
        bounds = np.cumsum([0] + [len(s.ids) * H for s in sets])
        whole = Table.of(table)
        return [Table(whole.columns, [arr[a:b] for arr in whole.arrays]) for a, b in pairwise(bounds.tolist())]

    def warm_up(self) -> float:
        """One forward, then one whole forecast of a synthetic window on the training grid (the first request
        otherwise pays for lazy imports and first-call set-up); seconds taken. /readyz answers 200 only after."""
        import torch

        model = self.fc.model_
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        if model.future_size:
            extra["future"] = torch.zeros(1, self.meta.horizon, model.future_size)
        with torch.inference_mode():
            try:
                model(torch.zeros(1, self.meta.window, model.input_size), **extra)
            except (LstmcastError, RuntimeError, TypeError, ValueError):
                pass  # static inputs have no neutral value: the first request warms those models
        try:
            self.forecast_many([self.check(self._synthetic_rows(), None)] * 2)
        except (LstmcastError, ValueError, TypeError):
            pass  # covariates, statics, wide or integer-time runs: the forward above is the warm-up
        self.warm = True
        return time.perf_counter() - t0

    def _synthetic_rows(self) -> pd.DataFrame:
        """``window`` rows on the training grid at the scaler's means: a request any window model accepts."""
        m = self.meta
        if m.integer_time or m.layout == "wide" or m.future_features:
            raise ValueError("no synthetic request for this run")
        times = pd.date_range(pd.Timestamp(m.anchor), periods=m.window, freq=m.freq)
        means = np.asarray(self.fc.scaler_["mean"], dtype=np.float64)[0]
        cols: dict[str, Any] = {m.time_col: times}
        if m.layout == "long" and m.id_col:
            cols[m.id_col] = m.ids[0]
        for j, name in enumerate([*m.targets, *m.features]):
            cols[name] = np.full(m.window, means[j] if j < len(means) else 0.0)
        return pd.DataFrame(cols)

    def model_info(self) -> dict[str, Any]:
        """GET /v1/model: what a client must send and what it gets back."""
        m = self.meta
        iv = m.intervals or {}
        return {"run": os.path.basename(os.path.normpath(self.run)), "layout": m.layout, "time_col": m.time_col,
                "id_col": m.id_col, "targets": list(m.targets), "features": list(m.features),
                "future_features": list(m.future_features or []), "window": m.window, "horizon": m.horizon,
                "freq": m.freq, "levels": list(iv.get("levels") or []),
                "stateful": bool(getattr(self.config.model, "stateful", False)),
                "rows_needed": {"per_series": 1 if m.mask_channel else m.window}}
