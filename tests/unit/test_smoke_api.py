from __future__ import annotations

import numpy as np
import pytest

from lstmcast import Forecaster
from lstmcast.errors import NotFittedError
from tests.conftest import seasonal_frame, small_config


def test_fit_returns_self_and_predicts_horizon_rows():
    df = seasonal_frame(300)
    fc = Forecaster(small_config())
    assert fc.fit(df) is fc
    out = fc.predict()
    assert list(out.columns) == ["time", "y"]
    assert len(out) == 6
    assert out["time"].iloc[0] == df["time"].iloc[-1] + np.timedelta64(1, "h")
    assert np.isfinite(out["y"]).all()


def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        Forecaster(small_config()).predict()


def test_python_dash_m_lstmcast_is_the_cli():
    """`python -m lstmcast` (so `torchrun ... -m lstmcast -- train ...` too) runs the same command as `lstmcast`."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "lstmcast", "train", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert "--nproc" in res.stdout and "--resume" in res.stdout


@pytest.mark.parametrize("command", ["export", "serve"])
def test_help_names_the_extra_to_install(command):
    """Rich markup read `[export]` in the help text as a style tag and printed `pip install 'lstmcast'`."""
    import os
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "lstmcast", command, "--help"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert f"pip install 'lstmcast[{command}]'" in res.stdout


def test_fit_gives_the_caller_its_torch_thread_count_back():
    """train.threads holds while training; a caller who runs torch on one thread finds one thread after fit."""
    import torch

    seen = []
    torch.set_num_threads(1)
    cfg = small_config(train={"threads": 2, "max_epochs": 1, "max_steps_per_epoch": 2})
    Forecaster(cfg).fit(seasonal_frame(200), progress=False,
                        callbacks=[lambda view, rec: seen.append(torch.get_num_threads())])
    assert seen and set(seen) == {2}  # training ran on train.threads
    assert torch.get_num_threads() == 1
