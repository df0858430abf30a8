"""Known-future covariates, statics and new series, end to end through Forecaster (issue #12 item 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast import Forecaster
from lstmcast.errors import DataError

H = 12


def _driven(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """y_t = 5 x_t + a daily cycle + small noise; x_t random but known in advance."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = rng.normal(size=n)
    y = 5 * x + 2 * np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=n)
    return pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="h"), "y": y, "x": x})


def _cfg(**data) -> dict:
    return {"data": {"time_col": "time", "target": "y", "horizon": H, "window": 48, **data},
            "train": {"max_epochs": 30, "min_steps": 300, "patience": 5, "seed": 0, "refit": False},
            "model": {"hidden_size": 32, "num_layers": 1}}


@pytest.mark.slow
def test_a_known_future_driver_cuts_the_backtest_error_to_under_0_3x():
    df = _driven()
    without = Forecaster(_cfg(features=["x"])).fit(df).backtest()["model"]["MASE"]
    fc = Forecaster(_cfg(future_features=["x"])).fit(df)
    with_future = fc.backtest()["model"]["MASE"]
    print(f"backtest MASE with --future-features {with_future:.3f}, as a past feature {without:.3f}")
    assert with_future <= 0.3 * without, (with_future, without)


def _fitted(**data) -> tuple[Forecaster, pd.DataFrame]:
    df = _driven(600)
    cfg = _cfg(future_features=["x"], **data)
    cfg["train"].update(max_epochs=2, min_steps=0, min_epoch_steps=2)
    return Forecaster(cfg).fit(df), df


def test_no_leakage_targets_after_the_origin_never_change_its_forecast_and_future_covariates_do():
    fc, df = _fitted()
    hist, fut = df.iloc[:500], df.iloc[500:500 + H][["time", "x"]]
    base = fc.predict(hist, future=fut)["y"].to_numpy()
    later = df.iloc[:500 + H].copy()
    later.loc[500:, "y"] += 100.0  # the targets after the origin: not given to predict, and must not matter
    assert np.array_equal(fc.predict(later.iloc[:500], future=fut)["y"].to_numpy(), base)
    moved = fut.copy()
    moved["x"] += 3.0
    assert not np.allclose(fc.predict(hist, future=moved)["y"].to_numpy(), base)


def test_predict_without_the_future_frame_says_what_is_needed():
    fc, df = _fitted()
    with pytest.raises(DataError, match="known-future covariates"):
        fc.predict(df.iloc[:500])
    short = df.iloc[500:500 + H - 2][["time", "x"]]
    with pytest.raises(DataError, match="x|missing|rows"):
        fc.predict(df.iloc[:500], future=short)


def _long(n_series: int, n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_series):
        t = np.arange(n)
        level = 10 * (k + 1)
        y = level + 3 * np.sin(2 * np.pi * t / 24 + k) + rng.normal(scale=0.3, size=n)
        frames.append(pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="h"), "id": f"s{k}",
                                    "y": y, "region": "north" if k % 2 else "south", "capacity": float(level)}))
    return pd.concat(frames, ignore_index=True)


def test_statics_and_id_embedding_train_and_a_new_series_is_forecast_from_its_own_rows():
    df = _long(4)
    cfg = {"data": {"time_col": "time", "id_col": "id", "target": "y", "horizon": H, "window": 48,
                    "static_features": ["region", "capacity"]},
           "model": {"hidden_size": 16, "num_layers": 1, "id_embedding": True},
           "train": {"max_epochs": 2, "min_steps": 0, "min_epoch_steps": 2, "refit": False}}
    fc = Forecaster(cfg).fit(df)
    assert fc.model_.statics.width > 2  # numeric capacity + region and id embeddings
    new = _long(5).query("id == 's4'").copy()
    new["id"] = "brand-new"
    out = fc.predict(new)
    assert list(out["id"].unique()) == ["brand-new"] and len(out) == H
    assert np.isfinite(out["y"]).all()
    # its scale comes from its own rows: the forecast sits near its own level (50), not the trained ones
    assert abs(out["y"].mean() - new["y"].iloc[-48:].mean()) < 15


def test_integer_time_trains_predicts_and_continues_the_steps():
    rng = np.random.default_rng(1)
    years = np.arange(1800, 2000)
    df = pd.DataFrame({"year": years, "y": np.sin(years / 5) + 0.1 * rng.normal(size=len(years))})
    cfg = {"data": {"time_col": "year", "target": "y", "horizon": 5, "window": 20},
           "train": {"max_epochs": 2, "min_steps": 0, "min_epoch_steps": 2, "refit": False}}
    fc = Forecaster(cfg).fit(df)
    out = fc.predict(df)
    assert out["year"].tolist() == [2000, 2001, 2002, 2003, 2004]
    assert np.isfinite(out["y"]).all()
    assert np.isfinite(fc.backtest()["model"]["MASE"])


def test_cli_predict_takes_the_future_file(tmp_path):
    from typer.testing import CliRunner

    from lstmcast.cli import app

    fc, df = _fitted()
    run = tmp_path / "run"
    fc.save(run)
    df.iloc[:500].to_csv(tmp_path / "recent.csv", index=False)
    df.iloc[500:500 + H][["time", "x"]].to_csv(tmp_path / "next.csv", index=False)
    res = CliRunner().invoke(app, ["predict", str(run), "--data", str(tmp_path / "recent.csv"), "--future",
                                   str(tmp_path / "next.csv"), "--out", str(tmp_path / "fc.csv")])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "fc.csv")) == H
    res = CliRunner().invoke(app, ["predict", str(run), "--data", str(tmp_path / "recent.csv"), "--out",
                                   str(tmp_path / "none.csv")])
    assert res.exit_code == 3 and "known-future covariates" in res.output
    assert not (tmp_path / "none.csv").exists()


def test_cli_trains_on_integer_years_and_writes_the_plot_and_forecast(tmp_path):
    from typer.testing import CliRunner

    from lstmcast.cli import app

    rng = np.random.default_rng(2)
    years = np.arange(1850, 2000)
    pd.DataFrame({"year": years, "y": np.sin(years / 6) + 0.1 * rng.normal(size=len(years))}).to_csv(
        tmp_path / "yearly.csv", index=False)
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "yearly.csv"), "--time-col", "year", "--target",
                                   "y", "--horizon", "4", "--run", str(run), "--set", "train.max_epochs=2",
                                   "--set", "train.min_steps=0", "--set", "train.min_epoch_steps=2"])
    assert res.exit_code == 0, res.output
    assert (run / "forecast.png").stat().st_size > 0
    fc = pd.read_csv(run / "forecast.csv")
    assert fc["year"].tolist() == [2000, 2001, 2002, 2003]


def test_cli_train_takes_future_and_static_feature_flags(tmp_path):
    from typer.testing import CliRunner

    from lstmcast.cli import app

    df = _long(2, n=200)
    df["x"] = np.random.default_rng(0).normal(size=len(df))
    df.to_csv(tmp_path / "long.csv", index=False)
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "long.csv"), "--time-col", "time", "--id-col",
                                   "id", "--target", "y", "--horizon", "6", "--window", "24", "--run", str(run),
                                   "--future-features", "x", "--static-features", "region,capacity",
                                   "--set", "train.max_epochs=1", "--set", "train.min_steps=0",
                                   "--set", "train.min_epoch_steps=2"])
    assert res.exit_code == 0, res.output
    import json

    meta = json.loads((run / "meta.json").read_text())
    assert meta["future_features"] == ["x"]
    assert meta["inputs"]["static_numeric"] == ["capacity"] and meta["inputs"]["static_categorical"] == ["region"]
    assert meta["inputs"]["calendar"] == ["hour_of_day", "day_of_week"]  # hourly data: auto
    assert not (run / "forecast.csv").exists() and (run / "forecast.png").is_file()
    assert "--future" in res.output


def test_doctor_takes_the_same_covariate_flags_as_train(tmp_path):
    """doctor (and tune) take --future-features / --static-features like train: the shape trace shows the roles."""
    import json

    from typer.testing import CliRunner

    from lstmcast.cli import app

    df = _long(2, n=200)
    df["x"] = np.random.default_rng(0).normal(size=len(df))
    df.to_csv(tmp_path / "long.csv", index=False)
    args = ["doctor", "--data", str(tmp_path / "long.csv"), "--time-col", "time", "--id-col", "id", "--target", "y",
            "--horizon", "6", "--window", "24", "--json", "--set", "data.calendar=none"]
    plain = CliRunner().invoke(app, args)
    roles = CliRunner().invoke(app, args + ["--future-features", "x", "--static-features", "region,capacity"])
    assert plain.exit_code == 0 and roles.exit_code == 0, roles.output
    a, b = json.loads(plain.stdout), json.loads(roles.stdout)
    assert b["parameters"]["total"] > a["parameters"]["total"]  # the decoder and the static encoder
    trace = json.dumps(b["trace"])
    assert "future" in trace and "static" in trace and "future" not in json.dumps(a["trace"])
