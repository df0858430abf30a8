"""Issue 20 item 3: a table of many seasonal series is scaled by each series' mean seasonal change (MASE's scale)
and trains on windows of at least three horizons; one series, and season-1 tables, keep the std and two."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster
from lstmcast.config import validate_config
from lstmcast.data import scaling
from lstmcast.data.io import read_table
from lstmcast.data.prepare import prepare, scaling_how
from lstmcast.data.validate import validate_frame
from lstmcast.run.meta import RunMeta

H = 6


def panel(lengths: list[int], seed: int = 0, trend: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for i, n in enumerate(lengths):
        t = np.arange(n)
        y = 50 + 5 * i + trend * i * t + 3 * np.sin(2 * np.pi * t / 12) + 0.3 * rng.standard_normal(n)
        parts.append(pd.DataFrame({"id": f"s{i:02d}", "date": pd.date_range("2001-01-01", periods=n, freq="MS"),
                                   "y": y}))
    return pd.concat(parts, ignore_index=True)


def prepared(df: pd.DataFrame, id_col: str | None = "id", **data):
    cfg = validate_config({"data": {"time_col": "date", "target": "y", "id_col": id_col, "horizon": H,
                                    "season": 12, **data}}).data
    return prepare(validate_frame(read_table(df, None, id_col), cfg), cfg)


def reference(v: np.ndarray, end: int, season: int) -> float:
    t = v[:end]
    m = season if end > season else 1
    d = np.abs(t[m:] - t[:-m])
    return float(np.nanmean(d)) if np.isfinite(d).any() else np.nan


def test_diff_scales_equal_a_loop_over_the_series():
    rng = np.random.default_rng(3)
    values = [rng.normal(size=(n, 2)).cumsum(axis=0) for n in (1, 3, 8, 13, 40)]
    values[4][5, 0] = np.nan  # a missing value drops the two changes it takes part in
    values.append(np.full((20, 2), 7.0))  # no change at all: keeps the fallback
    ends = [1, 3, 8, 13, 30, 20]
    mean, std, _ = scaling.fit_scalers(values, ends)
    out = scaling.diff_scales(values, ends, 12, 1, mean[:, :1], std[:, :1])
    for i, (v, e) in enumerate(zip(values, ends)):
        want = reference(v[:, 0], e, 12)
        if np.isfinite(want) and want > 0:
            assert out[i, 0] == pytest.approx(want)
        else:
            assert out[i, 0] == std[i, 0]
    assert out[3, 0] == pytest.approx(reference(values[3][:, 0], 13, 12))  # 13 > 12 points: the seasonal lag


def test_a_near_periodic_series_is_scaled_by_at_most_100_times_its_std():
    t = np.arange(48)
    v = (100 + 10 * np.sin(2 * np.pi * t / 12) + 1e-6 * np.random.default_rng(0).standard_normal(48))[:, None]
    mean, std, _ = scaling.fit_scalers([v], [48])
    out = scaling.diff_scales([v], [48], 12, 1, mean, std)
    assert out[0, 0] == pytest.approx(scaling.MIN_DIFF_TO_STD * std[0, 0])
    assert np.abs(scaling.transform(v, mean[0], out[0])).max() < 200


def test_auto_scaling_is_diff_only_for_a_table_of_seasonal_series():
    cfg = validate_config({"data": {"time_col": "date", "target": "y", "horizon": H}}).data
    assert cfg.scaling == "auto"
    assert scaling_how(cfg, panel=True, season=12) == "diff"
    assert scaling_how(cfg, panel=True, season=None) == "standard"
    assert scaling_how(cfg, panel=True, season=1) == "standard"
    assert scaling_how(cfg, panel=False, season=12) == "standard"
    assert scaling_how(cfg.model_copy(update={"scaling": "standard"}), panel=True, season=12) == "standard"


def test_a_seasonal_table_is_scaled_by_its_seasonal_changes_and_one_series_by_its_std():
    df = panel([60, 70, 80], trend=0.5)
    prep = prepared(df)
    assert prep.scaling_kind == "diff"
    for i in range(3):
        y = df.loc[df["id"] == f"s{i:02d}", "y"].to_numpy()
        assert prep.stds[i, 0] == pytest.approx(reference(y, prep.splits[i].train_end, 12))
        assert prep.means[i, 0] == pytest.approx(y[:prep.splits[i].train_end].mean())
    std = prepared(df, scaling="standard")
    assert std.scaling_kind == "standard" and not np.allclose(std.stds[:, 0], prep.stds[:, 0])
    one = df[df["id"] == "s02"].drop(columns="id")
    alone, alone_std = prepared(one, id_col=None), prepared(one, id_col=None, scaling="standard")
    assert alone.scaling_kind == "standard"
    np.testing.assert_array_equal(alone.stds, alone_std.stds)
    np.testing.assert_array_equal(alone.scaled, alone_std.scaled)


def test_a_seasonal_table_gets_at_least_three_horizons_of_window():
    assert prepared(panel([60, 70, 80]), season=4).window == 3 * H  # two seasons are fewer
    assert prepared(panel([60, 70, 80])).window == 2 * 12  # two seasons are more
    assert prepared(panel([30, 30, 30]), season=1).window == 2 * H  # season 1: two horizons (the median cap)
    assert prepared(panel([60, 70, 80]), window=10).window == 10


def test_a_new_series_at_predict_is_scaled_as_training_scaled_its_series():
    from lstmcast.inference.predict import series_scalers

    df = panel([30, 40, 50])
    fc = Forecaster({"data": {"time_col": "date", "target": "y", "id_col": "id", "horizon": H, "season": 12},
                     "model": {"hidden_size": 4, "num_layers": 1},
                     "train": {"max_epochs": 1, "min_steps": 0, "min_epoch_steps": 1, "refit": False},
                     "monitor": {"tensorboard": False}}).fit(df)
    assert fc.meta_.scaling == "diff" and fc.config_.data.scaling == "diff"  # auto as trained
    y = 100 + 20 * np.sin(2 * np.pi * np.arange(30) / 12) + np.arange(30.0)
    new = pd.concat([df, pd.DataFrame({"id": "zz", "date": pd.date_range("2001-01-01", periods=30, freq="MS"),
                                       "y": y})])
    series = fc.series(new)
    mean, std = series_scalers(series, fc.meta_, fc.scaler_)
    i = series.ids.index("zz")
    assert std[i, 0] == pytest.approx(reference(y, 30, 12)) and mean[i, 0] == pytest.approx(y.mean())


def test_a_run_from_before_diff_scaling_reads_as_standard():
    fields = {"format_version": 1, "layout": "long", "time_col": "date", "id_col": "id", "targets": ["y"],
              "features": [], "channels": ["y"], "ids": ["a", "b"], "freq": "MS", "anchor": "2001-01-01",
              "window": 12, "horizon": H, "season": 12, "n_targets": 1, "input_size": 1}
    assert RunMeta.model_validate(fields).scaling == "standard"
    assert RunMeta.model_validate({**fields, "scaling": "diff"}).scaling == "diff"
