"""Issue 21, "Failures": wrong results, crashes and lost outputs of the round-3 hostile trial (FAULTS.md R1-R8).

Each test fails on the code before the fix: R1 a zoned --future file for a naive-time model, R2 integer
``data.freq: 1``, R3 a best baseline with MASE 0, R4 a batch far above the training windows, R5 damaged study
storage, R6 two exports into one folder, R7 the monitor history across --resume, R8 interval widths.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast.doctor import doctor
from lstmcast.doctor.headline import baseline_finding


def integer_frame(n: int = 120) -> pd.DataFrame:
    t = np.arange(n)
    return pd.DataFrame({"step": t, "y": 5 + np.sin(2 * np.pi * t / 12)})


# -- R2 integer data.freq ------------------------------------------------------------------------------
def test_r2_integer_freq_one_reaches_the_doctor_without_crashing():
    cfg = {"data": {"time_col": "step", "target": "y", "horizon": 6, "window": 12, "freq": 1}}
    report = doctor(cfg)  # config only: the season and the calendar come from data.freq
    assert report.dims.L == 12 and not report.errors
    report = doctor(cfg, integer_frame())
    assert not report.errors


# -- R3 a baseline exact on the backtest -----------------------------------------------------------------
def test_r3_a_best_baseline_with_mase_zero_is_named_not_divided_by():
    found = baseline_finding({"model": {"MASE": 0.02}, "naive": {"MASE": 2.1}, "seasonal_naive": {"MASE": 0.0}})
    assert found is not None and found.code == "loses-to-baseline"
    assert "MASE 0.02 against 0 (seasonal naive is exact on this series)" in found.message
    # float32 rounding of an exact model is a tie, not a loss
    assert baseline_finding({"model": {"MASE": 9.8e-8}, "seasonal_naive": {"MASE": 0.0}}) is None
