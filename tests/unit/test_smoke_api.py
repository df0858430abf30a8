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
