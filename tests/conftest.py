"""Shared test set-up.

Under pytest-xdist each worker is pinned to its own core: lstmcast's default thread count is the
cores this process may use (os.sched_getaffinity), and oversubscribed OpenMP threads make small
LSTM steps 10x-1000x slower (docs/PERFORMANCE.md). Subprocesses (CLI tests) inherit the pinning.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pin_worker() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index = int(worker.lstrip("gw") or 0)
    os.sched_setaffinity(0, {cores[index % len(cores)]})


_pin_worker()
# precision: auto remembers its verdicts per machine (training/decision_cache.py); tests never share them
os.environ["LSTMCAST_CACHE_DIR"] = "off"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: skipped (with the reason) where none is visible."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in gpu:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_thread_torch():
    """Each test runs torch on the cores it may use; restore afterwards."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def seasonal_frame(n: int = 600, period: int = 24, noise: float = 0.1, seed: int = 0, trend: float = 0.0,
                   freq: str = "h", start: str = "2024-01-01") -> pd.DataFrame:
    """A synthetic seasonal series with noise: columns ``time`` and ``y``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 10 + 3 * np.sin(2 * np.pi * t / period) + 1.5 * np.sin(4 * np.pi * t / period + 1) + trend * t
    y = y + noise * rng.standard_normal(n)
    return pd.DataFrame({"time": pd.date_range(start, periods=n, freq=freq), "y": y})


@pytest.fixture
def seasonal_df() -> pd.DataFrame:
    return seasonal_frame()


def small_config(**sections) -> dict:
    """A config that trains in about a second on ``seasonal_frame()``."""
    # calendar none: these tests are about other things; tests/integration/test_covariates.py and the doctor /
    # export input tests cover the calendar channels that data.calendar: auto adds to this hourly data
    cfg = {"data": {"time_col": "time", "target": "y", "horizon": 6, "window": 24, "season": 24, "calendar": "none"},
           "model": {"hidden_size": 16, "num_layers": 1, "dropout": 0.0},
           # epochs of one pass and no refit: the checkpoint/resume tests count steps per pass; the step
           # budget and the refit have their own tests (tests/unit/test_defaults_sizing.py)
           "train": {"max_epochs": 3, "batch_size": 32, "seed": 0, "min_epoch_steps": 1, "min_steps": 0,
                     "refit": False}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600):
    """Run ``lstmcast`` in a subprocess with the test interpreter; returns CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "lstmcast.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory) -> Path:
    """One tiny saved run for every `lstmcast serve` test of the session (tests/serve_fixtures.py)."""
    pytest.importorskip("starlette")
    from tests.serve_fixtures import save_tiny_run

    return save_tiny_run(tmp_path_factory.mktemp("serve"))
