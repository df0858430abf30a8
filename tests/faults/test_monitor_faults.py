"""FAULTS.md U4: TensorBoard missing or its log folder unwritable -> a warning, and training continues.

The probe statistics (monitor.json, findings) do not depend on TensorBoard and must still be there.
"""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from lstmcast import Forecaster
from lstmcast.training.monitor import Monitor
from tests.conftest import seasonal_frame, small_config

LOGGER = "lstmcast.training.monitor"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _fit(monitor: Monitor, epochs: int = 3) -> Forecaster:
    cfg = small_config(train={"max_epochs": epochs, "patience": 100, "threads": 1})
    return Forecaster(cfg).fit(seasonal_frame(n=400), callbacks=[monitor])


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_missing_tensorboard_package_only_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    mon = Monitor(tmp_path, max_overhead=None)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fc = _fit(mon)
    mon.close()
    (msg,) = _warnings(caplog)
    assert "tensorboard package is not importable" in msg and "--no-tensorboard" in msg
    assert len(fc.history_) == 3 and [p["epoch"] for p in mon.probes] == [1, 2, 3]
    assert not (tmp_path / "tb").exists() and mon.summary()["tensorboard"] is False


def test_unwritable_log_folder_only_warns(tmp_path, caplog):
    (tmp_path / "tb").write_text("a file where the log folder should be")
    mon = Monitor(tmp_path, max_overhead=None)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fc = _fit(mon)
    mon.close()
    (msg,) = _warnings(caplog)
    assert f"TensorBoard logging to {tmp_path / 'tb'} failed (FileExistsError" in msg
    assert "training continues without it" in msg and "writable" in msg
    assert len(fc.history_) == 3 and len(mon.probes) == 3
    assert (tmp_path / "tb").read_text() == "a file where the log folder should be"


def test_a_write_failing_mid_run_warns_once_and_stops_logging(tmp_path, caplog):
    mon = Monitor(tmp_path, max_overhead=None)
    calls = []

    def fail_from_epoch_2(trainer, rec):
        if rec.epoch == 2:
            def full(*args, **kwargs):
                calls.append(args[0])
                raise OSError(28, "No space left on device")

            mon.writer.add_scalar = full
            mon.writer.add_histogram_raw = full
        mon(trainer, rec)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fc = Forecaster(small_config(train={"max_epochs": 3, "patience": 100, "threads": 1})).fit(
            seasonal_frame(n=400), callbacks=[fail_from_epoch_2])
    mon.close()
    (msg,) = _warnings(caplog)
    assert "No space left on device" in msg and "training continues without it" in msg
    assert len(calls) == 1 and mon.writer is None and len(fc.history_) == 3 and len(mon.probes) == 3


def test_a_failing_probe_only_warns(tmp_path, monkeypatch, caplog):
    import lstmcast.training.probe as probe

    def broken(*args, **kwargs):
        raise RuntimeError("unexpected module layout")

    monkeypatch.setattr(probe, "probe_model", broken)
    mon = Monitor(tmp_path, max_overhead=None)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fc = _fit(mon)
    mon.close()
    (msg,) = _warnings(caplog)
    assert "the probe failed (RuntimeError: unexpected module layout)" in msg
    assert len(fc.history_) == 3 and mon.probes == [] and mon.findings() == []
    assert any((tmp_path / "tb").iterdir())  # the scalars still went to TensorBoard
