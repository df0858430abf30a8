"""FAULTS H16 (long tables): series of different scales are not pooled into one MAE, every series has its
own metrics, the forecast plot says how many series it shows, and the backtest forecasts are written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lstmcast.inference.backtest import methods, score
from lstmcast.metrics import all_metrics
from tests.conftest import seasonal_frame, small_config


def _two_scales():
    """Two series, one in units, one in thousands; the model is 10% off on each."""
    actual = np.concatenate([np.full((3, 2, 1), 10.0), np.full((3, 2, 1), 10_000.0)])
    model = actual * 1.1
    naive = actual * 1.2
    scale = np.concatenate([np.full((3, 1, 1), 1.0), np.full((3, 1, 1), 1000.0)])
    return actual, {"model": model, "naive": naive}, scale, np.array([0, 0, 0, 1, 1, 1])


def test_several_series_get_per_series_metrics_and_no_unmarked_pooled_mae():
    actual, fc, scale, sidx = _two_scales()
    out = score(actual, fc, scale, sidx, ["small", "big"])
    assert set(out) == {"model", "naive", "per_series"}
    # per series: each series' own units
    assert out["per_series"]["small"]["model"] == all_metrics(actual[:3], fc["model"][:3], scale[:3])
    assert out["per_series"]["big"]["model"]["MAE"] == pytest.approx(1000.0)
    assert out["per_series"]["small"]["model"]["MAE"] == pytest.approx(1.0)
    # pooled: only the scale-free metrics under their usual names, averaged over series; MAE/RMSE marked pooled
    row = out["model"]
    assert set(row) == {"MAE_pooled", "RMSE_pooled", "sMAPE", "MASE"}
    assert row["MASE"] == pytest.approx((1.0 / 1.0 + 1000.0 / 1000.0) / 2)
    assert row["sMAPE"] == pytest.approx(out["per_series"]["small"]["model"]["sMAPE"])
    assert row["MAE_pooled"] == pytest.approx((1.0 + 1000.0) / 2)
    assert set(methods(out)) == {"model", "naive"}


def test_one_series_keeps_the_plain_metric_names():
    actual, fc, scale, _ = _two_scales()
    out = score(actual[:3], {k: v[:3] for k, v in fc.items()}, scale[:3], np.zeros(3, int), ["only"])
    assert set(out) == {"model", "naive"} and set(out["model"]) == {"MAE", "RMSE", "sMAPE", "MASE"}


def _long_frame(n_series: int, n: int = 240) -> pd.DataFrame:
    parts = []
    for k in range(n_series):
        df = seasonal_frame(n, seed=k)
        df["y"] = df["y"] * 10.0 ** (k % 3)  # different scales
        parts.append(df.assign(store=f"s{k}"))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    from lstmcast.config import validate_config
    from lstmcast.workflow import train_run

    csv = tmp_path_factory.mktemp("data") / "long.csv"
    _long_frame(6).to_csv(csv, index=False)
    cfg = validate_config(small_config(data={"path": str(csv), "id_col": "store"},
                                       model={"hidden_size": 8}, train={"max_epochs": 1, "threads": 1}))
    run = tmp_path_factory.mktemp("runs") / "run"
    fc, metrics = train_run(cfg, run)
    return fc, metrics, run


@pytest.mark.slow  # trains a 6-series run (~7 s); the score() tests above are the fast ones
def test_train_writes_per_series_metrics_and_every_backtest_forecast(long_run):
    fc, metrics, run = long_run
    saved = json.loads((run / "metrics.json").read_text())
    assert sorted(saved["per_series"]) == [f"s{k}" for k in range(6)]
    assert set(saved["model"]) == {"MAE_pooled", "RMSE_pooled", "sMAPE", "MASE"}
    bt = pd.read_csv(run / "backtest.csv")
    assert list(bt.columns) == ["series", "target", "cutoff", "origin", "step", "time", "actual", "model", "naive",
                                "seasonal_naive"]  # cutoff: the last observed time of each window (issue 22)
    assert sorted(bt["series"].unique()) == [f"s{k}" for k in range(6)]
    assert len(bt) == fc.backtest_.actual.size
    # the rows are the forecasts the metrics were computed from
    s3 = bt[bt["series"] == "s3"]
    assert np.mean(np.abs(s3["actual"] - s3["model"])) == pytest.approx(saved["per_series"]["s3"]["model"]["MAE"])
    # the actual at each row is the series' value at that time
    frame = _long_frame(6)
    s3_times = frame[frame["store"] == "s3"].set_index("time")["y"]
    first = s3.iloc[0]
    assert first["actual"] == pytest.approx(s3_times[pd.Timestamp(first["time"])], rel=1e-5)
    assert (pd.to_datetime(s3["time"]) >= pd.to_datetime(s3["origin"])).all()


@pytest.mark.slow  # trains a 6-series run (~7 s); the score() tests above are the fast ones
def test_forecast_plot_title_says_how_many_series_are_shown(long_run, tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    from unittest import mock

    import matplotlib.figure

    from lstmcast.report.plots import forecast_plot

    fc, _, _ = long_run
    titles = []
    real = matplotlib.figure.Figure.suptitle
    with mock.patch.object(matplotlib.figure.Figure, "suptitle", autospec=True,
                           side_effect=lambda fig, t, **kw: titles.append(t) or real(fig, t, **kw)):
        forecast_plot(fc.prepared_.series, fc.predict(), fc.meta_, fc.backtest_, tmp_path / "f.png")
        # data.shard_series: rank 0 holds only its own series; the title counts the run's
        forecast_plot(fc.prepared_.series, fc.predict(), fc.meta_, fc.backtest_, tmp_path / "g.png", total=12)
    assert titles == ["4 of 6 series shown (the first ones; every series' backtest is in backtest.csv)",
                      "4 of 12 series shown (the first of rank 0's own; every series' backtest is in backtest.csv)"]
    assert (tmp_path / "f.png").stat().st_size > 1000


@pytest.mark.slow  # trains a 6-series run (~7 s); the score() tests above are the fast ones
def test_cli_metrics_table_and_report_handle_per_series_metrics(long_run):
    from lstmcast.report.html import metrics_section, summary_section

    _, metrics, _ = long_run
    html = metrics_section(metrics)
    assert "MAE_pooled" in html and "6 series: sMAPE and MASE are means over the series" in html
    assert "per_series</td>" not in html
    assert "Backtest MASE" in summary_section(None, metrics, None)


def test_cli_metrics_table_shows_the_pooled_columns_not_per_series(capsys):
    from lstmcast.cli_output import metrics_table as _metrics_table

    actual, fc, scale, sidx = _two_scales()
    _metrics_table(score(actual, fc, scale, sidx, ["small", "big"]), "backtest")
    out = capsys.readouterr().out
    assert "MAE_pooled" in out and "MASE" in out and "naive" in out
    assert "per_series" not in out and "small" not in out
