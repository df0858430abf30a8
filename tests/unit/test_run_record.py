"""The run record is symmetric (save_run(read_run(folder)) writes the same folder), the Forecaster's state is
declared (run_, training_), and the run folder and the checkpoints refuse the same pickle formats."""

from __future__ import annotations

import pytest

from lstmcast import Forecaster
from lstmcast.errors import CheckpointError, NotFittedError
from lstmcast.run.folder import read_run, save_run
from lstmcast.run.manifest import UNSAFE_SUFFIXES
from lstmcast.run.record import FittedRun
from lstmcast.training.checkpoint import CheckpointStore, read_checkpoint
from tests.conftest import seasonal_frame, small_config


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("record")
    csv = d / "series.csv"
    seasonal_frame(200).to_csv(csv, index=False)
    fc = Forecaster(small_config(data={"path": str(csv)}, train={"precision": "fp32", "max_epochs": 1}))
    fc.fit(str(csv))
    fc.save(d / "run", outputs=False)
    return fc, d / "run"


def test_an_unfitted_forecaster_holds_no_record():
    fc = Forecaster(small_config())
    assert fc.run_ is None and fc.training_ is None and fc.backtest_ is None and fc.prepared_ is None
    assert not hasattr(fc, "model_")  # sklearn's convention: fitted attributes appear with fit
    with pytest.raises(NotFittedError, match=r"not fitted yet.*before \.predict\(\)"):
        fc.predict()


def test_read_then_save_writes_the_same_files(fitted, tmp_path):
    _, run = fitted
    stored = read_run(run)
    assert stored.folder == run and stored.data is not None  # trained on data.path: its sha256 is recorded
    again = tmp_path / "again"
    save_run(again, stored)
    for name in ("config.yaml", "model.safetensors", "scaler.json", "meta.json", "history.json", "manifest.json"):
        assert (again / name).read_bytes() == (run / name).read_bytes(), name


def test_a_loaded_record_saves_as_the_fitted_one(fitted, tmp_path):
    fc, run = fitted
    loaded = FittedRun.from_stored(read_run(run))
    assert loaded.folder == run and loaded.backtest_model is loaded.model  # no train.refit: one model
    stored = loaded.stored()
    mine = fc.run_.stored()
    assert stored.meta == mine.meta and stored.history == mine.history and stored.data == read_run(run).data
    assert set(stored.state) == set(mine.state)
    assert all(bool((stored.state[k] == mine.state[k]).all()) for k in mine.state)
    assert fc.training_ is not None and fc.training_.data_file == fc.config_.data.path


@pytest.mark.parametrize("suffix", UNSAFE_SUFFIXES)
def test_the_run_folder_and_the_checkpoints_refuse_the_same_suffixes(tmp_path, suffix):
    folder = tmp_path / f"model{suffix}"
    folder.mkdir()
    for load in (read_run, read_checkpoint, lambda p: CheckpointStore(p).load_latest()):
        with pytest.raises(CheckpointError, match=r"pickle-based file .*never unpickles"):
            load(folder)


def test_a_folder_of_pickles_only_is_refused_with_the_reason(tmp_path):
    (tmp_path / "model.joblib").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match=r"only pickle-based files \['model.joblib'\].*never unpickles"):
        read_run(tmp_path)


def test_reading_a_backtest_or_training_report_that_is_not_there_is_a_real_error(tmp_path):
    """Not an assert (gone under python -O): a NotFittedError saying what to call."""
    import pytest as _pytest

    from lstmcast import Forecaster
    from lstmcast.errors import NotFittedError
    from tests.conftest import seasonal_frame, small_config

    fc = Forecaster(small_config(train={"max_epochs": 1})).fit(seasonal_frame(200), progress=False)
    with _pytest.raises(NotFittedError, match=r"call \.backtest\(\) first"):
        _ = fc.last_backtest
    assert fc.trained.result is fc.training_.result
    fc.save(tmp_path / "run", outputs=False)
    with _pytest.raises(NotFittedError, match="keeps no training report"):
        _ = Forecaster.load(tmp_path / "run").trained
