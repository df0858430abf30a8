"""A fitted Forecaster's run record: what its run folder holds (``StoredRun``), with the models built.

``Forecaster.fit`` builds one, ``lstmcast.load`` reads one (``from_stored(read_run(path))``) and
``Forecaster.save`` writes one (``save_run(path, record.stored())``): the same record both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast.data.inputs import InputSpec
from lstmcast.errors import CheckpointError, LstmcastError
from lstmcast.model.build import build_model
from lstmcast.run.folder import BACKTEST_MODEL, StoredRun

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.run.meta import RunMeta


@dataclass
class FittedRun:
    """config.yaml, the model (and with train.refit the backtest's own model), meta.json, scaler.json,
    history.json and manifest.json's record of the training file."""

    config: ForecastConfig  # resolved: every "auto" settled
    model: LSTMForecaster  # forecasts (train.refit: trained on every row)
    backtest_model: LSTMForecaster  # never saw the test split: every backtest number comes from it (else ``model``)
    meta: RunMeta
    scaler: dict[str, Any]
    history: list[dict[str, Any]]  # one record an epoch
    data: dict[str, str] | None = None  # manifest.json "data" of a loaded run: its training file and sha256
    folder: Path | None = None  # the run folder it was loaded from (None: fitted in this process)

    def stored(self, data: dict[str, str] | None = None) -> StoredRun:
        """The record as ``save_run`` writes it: weights on the CPU; ``data`` (the training file's record) unless
        a loaded run already carries one."""
        backtest = None if self.backtest_model is self.model else _state(self.backtest_model)
        return StoredRun(config=self.config, meta=self.meta, scaler=self.scaler, state=_state(self.model),
                         backtest_state=backtest, history=self.history,
                         data=self.data if self.data is not None else data, folder=self.folder)

    @classmethod
    def from_stored(cls, stored: StoredRun) -> FittedRun:
        """Build the models of a checked run folder (``read_run``); CheckpointError (exit 4) if the weights do
        not fit the sizes meta.json and config.yaml give."""
        import torch

        cfg, meta = stored.config, stored.meta

        def build(state: dict[str, Any]) -> LSTMForecaster:
            with torch.device("meta"):  # shapes only: the weights come from the file (assign=True), nothing allocated
                model = build_model(cfg.model, meta.input_size, meta.n_targets, meta.horizon, meta.window,
                                    **InputSpec.from_dict(meta.inputs_dict()).model_sizes())
            model.load_state_dict(state, assign=True)
            return model.eval()
        which = "model.safetensors"
        try:
            model = build(stored.state)
            which = BACKTEST_MODEL
            backtest_model = build(stored.backtest_state) if stored.backtest_state is not None else model
        except (KeyError, TypeError, ValueError, RuntimeError, LstmcastError) as exc:
            raise CheckpointError(f"{stored.folder}: the files do not fit together ({which}: {exc}): retrain this "
                                  "run") from None
        return cls(config=cfg, model=model, backtest_model=backtest_model, meta=meta, scaler=stored.scaler,
                   history=stored.history, data=stored.data, folder=stored.folder)


def _state(model: LSTMForecaster) -> dict[str, Any]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
