"""Issue 20 end to end: a small panel with short series (1 to 50 points) trains through the CLI; every series
is forecast, and the counts printed, in metrics.json, diagnosis.json and report.html agree with the table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lstmcast.data.coverage import summary_lines
from lstmcast.data.windows import min_train_points
from tests.conftest import run_cli

H = 6
LENGTHS = [1, 2, 5, 9, 14, 20, 30, 40, 50, 50]


@pytest.mark.slow
def test_a_panel_with_short_series_trains_and_forecasts_every_series_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    parts = []
    for i, n in enumerate(LENGTHS):
        t = np.arange(n)
        y = 100 + 20 * i + 8 * np.sin(2 * np.pi * t / 12) + rng.standard_normal(n)
        parts.append(pd.DataFrame({"store": f"p{i}", "month": pd.date_range("2010-01-01", periods=n, freq="MS"),
                                   "sales": y}))
    pd.concat(parts, ignore_index=True).to_csv(tmp_path / "panel.csv", index=False)
    run = tmp_path / "run"
    res = run_cli("train", "--data", str(tmp_path / "panel.csv"), "--time-col", "month", "--target", "sales",
                  "--id-col", "store", "--horizon", str(H), "--season", "12", "--run", str(run),
                  "--set", "train.max_epochs=3", "--set", "train.min_steps=0", "--set", "model.hidden_size=8",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    forecast = pd.read_csv(run / "forecast.csv")
    assert forecast.groupby("store").size().to_dict() == {f"p{i}": H for i in range(len(LENGTHS))}
    assert np.isfinite(forecast["sales"]).all()
    counts = json.loads((run / "metrics.json").read_text())["series"]
    n = np.array(LENGTHS)
    need = min_train_points(H)
    assert counts["total"] == len(LENGTHS)
    assert counts["trained"]["count"] == int((n >= need).sum())
    assert counts["validated"]["count"] == int((n - 2 * H >= need).sum())  # data.split auto: last-horizon
    # an origin needs a season (12) of history for seasonal naive: the 14-point series has 8 before its test
    assert counts["backtested"]["count"] == int(((n - H >= need) & (n - H >= 12)).sum())
    assert "fewer than 12 points of history" in counts["backtested"]["left_out"][-1]["reason"]
    assert counts["forecast"]["count"] == len(LENGTHS)
    assert [x["id"] for x in counts["trained"]["left_out"]] == [f"p{i}" for i in np.flatnonzero(n < need)]
    for line in summary_lines(counts):  # printed as written
        assert line in res.stdout
    assert json.loads((run / "diagnosis.json").read_text())["series"] == counts
    html = (run / "report.html").read_text()
    assert f"series trained: {counts['trained']['count']} of {len(LENGTHS)}" in html
    meta = json.loads((run / "meta.json").read_text())
    assert meta["mask_channel"] is True
    local = meta.get("local")  # model.local auto: the validation windows decided (inference/local.py)
    resolved = yaml.safe_load((run / "config.yaml").read_text())["model"]["local"]
    assert resolved == ("theta" if local is not None else "none")
    printed = "forecasts: 0.70 x the model's + 0.30 x each series' own Theta forecast" in res.stdout
    assert printed == (local is not None)
    if local is not None:
        assert (local["method"], local["weight"], local["drift"]) == ("theta", 0.3, 1.0) and local["gate"]["t"] <= 2
    out = tmp_path / "again.csv"  # the saved run forecasts the short series too
    res = run_cli("predict", str(run), "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    again = pd.read_csv(out)
    assert len(again) == H * len(LENGTHS)
