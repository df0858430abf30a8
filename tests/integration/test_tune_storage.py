"""Worker slots (live-worker count, dead owners), the thread share, and the study fingerprint check."""

from __future__ import annotations

from pathlib import Path

import pytest

from lstmcast.config import validate_config
from lstmcast.errors import ConfigError
from lstmcast.tuning.storage import HOST, WorkerSlot
from lstmcast.tuning.study import TuneOptions, Tuner
from tests.conftest import seasonal_frame, small_config


def test_slots_count_live_workers_and_detect_dead_owners(tmp_path):
    a, b = WorkerSlot(tmp_path), WorkerSlot(tmp_path)
    assert (a.slot, b.slot) == (0, 1)
    assert a.live_workers() == 2
    assert a.owner_alive(b.worker_id) is True
    assert a.owner_alive(f"{HOST}/1/not-its-token") is False  # the slot was reused by another worker
    assert a.owner_alive("another-host/0/abc") is None  # only heartbeats can tell for other machines
    b.close()
    assert a.live_workers() == 1
    assert a.owner_alive(b.worker_id) is False
    c = WorkerSlot(tmp_path)
    assert c.slot == 1 and a.owner_alive(b.worker_id) is False
    a.close()
    c.close()


def _cfg(tmp_path: Path, **tune):
    csv = tmp_path / "s.csv"
    if not csv.exists():
        seasonal_frame(300).to_csv(csv, index=False)
    return validate_config(small_config(data={"path": str(csv), "window": None},
                                        tune={"max_epochs": 1, "window_periods": [1, 2], **tune}))


def test_thread_share_is_cores_over_live_workers(tmp_path, monkeypatch):
    monkeypatch.setattr("lstmcast.training.accel.available_cores", lambda: 8)
    with Tuner(_cfg(tmp_path), TuneOptions(run_dir=tmp_path / "run")) as first:
        assert first.threads() == 8
        other = WorkerSlot(tmp_path / "run")  # a second worker joins this folder
        assert first.threads() == 4
        other.close()
        assert first.threads() == 8
    with Tuner(_cfg(tmp_path), TuneOptions(run_dir=tmp_path / "run", workers_per_machine=3)) as told:
        assert told.threads() == 2
    with Tuner(_cfg(tmp_path), TuneOptions(run_dir=tmp_path / "run", threads=5)) as fixed:
        assert fixed.threads() == 5


def test_joining_a_study_with_another_config_is_refused(tmp_path):
    with Tuner(_cfg(tmp_path), TuneOptions(run_dir=tmp_path / "run")):
        pass
    other = Tuner(_cfg(tmp_path, lr=[0.001, 0.002]), TuneOptions(run_dir=tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"was started with another configuration \(space.lr: \[0.0001, 0.01\] "
                                          r"in the study, \[0.001, 0.002\] now\)"):
        other.open()
    other.close()
