"""``data.transform``: the targets through a transform before scaling, undone on every forecast.

``log`` suits strictly positive data whose variation grows with its level (sales, tourism, most competition
panels): per-series scaling of the log removes the level, and errors become relative. The transform applies to
the target channels only (the first T of each row), in training, predict and the backtest's model inputs; the
baselines and every metric stay in the original units.

>>> v = np.array([[1.0, 5.0], [np.e, 6.0]])
>>> forward(v, 1, "log")[:, 0].tolist(), forward(v, 1, "log")[:, 1].tolist()
([0.0, 1.0], [5.0, 6.0])
>>> float(inverse(np.array([1.0]), "log")[0]) == np.e
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError

_EXP_MAX = 80.0  # exp(80) ~ 5.5e34: inside float32, so a runaway forecast stays finite and is reported as such


def forward(values: np.ndarray, n_targets: int, kind: str) -> np.ndarray:
    """``values`` (..., C) with the first ``n_targets`` channels transformed (a copy); ``values`` itself for none."""
    if kind == "none":
        return values
    out = np.array(values, dtype=values.dtype, copy=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # refused before training (check_positive)
        out[..., :n_targets] = np.log(out[..., :n_targets])
    return out


def inverse(y: np.ndarray, kind: str) -> np.ndarray:
    """Forecasts (any shape, targets only) back to original units."""
    if kind == "none":
        return y
    return np.exp(np.minimum(y, _EXP_MAX))


def check_positive(ids: list[str], values: list[np.ndarray], n_targets: int, kind: str, times: Any = None) -> None:
    """``log`` needs every target value > 0: refuse the first series that has one that is not, naming it."""
    if kind == "none":
        return
    for i, v in enumerate(values):
        t = v[:, :n_targets]
        bad = t <= 0  # NaN compares False: missing values stay the fill policy's business
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            where = f" at {times[i][row]}" if times is not None else ""
            label = f"series {ids[i]!r}" if ids[i] else "the series"
            raise DataError(f"data.transform is 'log' but {label} has {int(bad.sum())} target values <= 0, the first "
                            f"{float(t[bad][0]):.6g}{where}: the log needs strictly positive targets; use "
                            "data.transform: none (or shift the data)")
