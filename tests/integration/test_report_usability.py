"""Report and plot details a first-time user tripped on (issue 22 items 3 and 12): the forecast plot's history
starts before the backtest forecasts, an empty forecast (known-future covariates) is neither drawn nor listed,
axes are labelled, the monitor plot tells layers apart, the Data table has no empty header and readable times,
sMAPE says percent, the interval table fits a narrow terminal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster
from lstmcast.report import html, plots
from tests.conftest import seasonal_frame, small_config


@pytest.fixture(scope="module")
def fitted() -> Forecaster:
    fc = Forecaster(small_config(train={"max_epochs": 1})).fit(seasonal_frame(500))
    fc.backtest()
    return fc


def _capture(monkeypatch) -> list:
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig))
    return figs


def test_history_starts_before_the_first_backtest_forecast(fitted, monkeypatch, tmp_path):
    figs = _capture(monkeypatch)
    series = fitted.series(None)
    plots.forecast_plot(series, fitted.predict(), fitted.meta_, fitted.backtest_, tmp_path / "f.png",
                        history_points=60)
    left, zoom = figs[0].axes[:2]
    history = left.get_lines()[0].get_xdata()
    first_origin = series.times[0][int(fitted.backtest_.origins.min())]
    assert len(series.times[0]) - int(fitted.backtest_.origins.min()) > 60  # the old cut missed it
    assert np.datetime64(pd.Timestamp(history[0]).to_datetime64()) <= first_origin
    assert left.get_ylabel() == "y" and zoom.get_ylabel() == "y"
    assert "forecast" in [t.get_text() for t in zoom.get_legend().get_texts()]


def test_an_empty_forecast_is_neither_drawn_nor_listed(fitted, monkeypatch, tmp_path):
    figs = _capture(monkeypatch)
    empty = pd.DataFrame({"time": [], "y": []})
    plots.forecast_plot(fitted.series(None), empty, fitted.meta_, fitted.backtest_, tmp_path / "f.png")
    labels = [t.get_text() for ax in figs[0].axes[:2] for t in ax.get_legend().get_texts()]
    assert "forecast" not in labels and "backtest forecasts" in labels
    assert "no forecast yet" in " ".join(t.get_text() for t in figs[0].axes[1].texts)


def test_summary_of_a_known_future_run_says_no_forecast_was_made():
    meta = {"horizon": 24, "targets": ["demand"], "window": 48, "future_features": ["holiday"]}
    text = html.summary_section(meta, None, None)
    assert "Forecasts 24 steps" not in text and "No forecast yet" in text and "--future" in text
    assert "Forecasts 24 steps of demand" in html.summary_section({**meta, "future_features": []}, None, None)


def test_data_table_has_no_empty_header_and_plain_times():
    meta = {"layout": "single", "targets": ["y"], "freq": "h", "lengths": [10], "train_end": [5], "val_end": [7],
            "window": 4, "horizon": 2, "season": 24, "last_time": ["2024-01-09T23:00:00.000000000"]}
    table = html.data_section(meta, [])
    assert "<thead>" not in table and "<th></th>" not in table
    assert "2024-01-09 23:00<" in table and "000000000" not in table
    assert html._when("2024-01-09T00:00:00.000000000") == "2024-01-09"
    assert html._when("1970") == "1970"


def test_smape_is_marked_percent_and_long_headers_may_break():
    metrics = {"model": {"MAE": 1.0, "sMAPE": 3.0, "MASE": 0.5, "interval_score_95": 2.0},
               "naive": {"MAE": 2.0, "sMAPE": 4.0, "MASE": 1.0, "interval_score_95": 3.0}}
    table = html.metrics_section(metrics)
    assert "<th>sMAPE (%)</th>" in table and "interval_<wbr>score_<wbr>95" in table


def test_interval_table_fits_an_80_column_terminal(capsys, monkeypatch):
    from lstmcast.cli_output import metrics_table

    monkeypatch.setenv("COLUMNS", "80")
    row = {"MAE": 1.0, "RMSE": 1.5, "sMAPE": 3.0, "MASE": 0.5, "coverage_80": 0.79, "coverage_95": 0.94,
           "width_80": 1.2, "width_95": 1.9, "interval_score_80": 2.1, "interval_score_95": 2.9, "pinball": 0.3}
    metrics_table({"model": row, "naive": row, "seasonal_naive": row}, "backtest")
    out = capsys.readouterr().out
    for name in ("coverage_80", "interval_score_95", "pinball", "sMAPE %"):
        assert name in out, out
    assert "…" not in out


def test_monitor_plot_tells_layers_apart_and_shows_zero_saturation(monkeypatch, tmp_path):
    figs = _capture(monkeypatch)
    gates = {g: 0.5 for g in ("input", "forget", "cell", "output")}
    layer = {"gate_mean": gates, "gate_saturated": {g: 0.0 for g in gates}, "dead_units": 0, "units": 8,
             "h_abs_mean": 0.3}
    plots.probe_plot([{"epoch": e, "layers": [layer, layer]} for e in (1, 2, 3)], tmp_path / "m.png")
    means, saturation = figs[0].axes[:2]
    styles = {(line.get_marker(), line.get_linestyle(), line.get_fillstyle())
              for line in means.get_lines() if line.get_label().startswith("input")}
    assert len(styles) == 2  # layer 1 and layer 2 differ in the legend, not only in dashes
    assert "no gate saturated in any probe" in [t.get_text() for t in saturation.texts]
    assert saturation.get_ylim()[1] < 0.2  # not a 0..1 axis with a flat line at the bottom
