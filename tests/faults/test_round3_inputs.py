"""Hardening round 3 (issue 21), items 15-19: odd inputs, tuning folders, plot text, memory at mid scale and
smaller messages. Each test fails on the code before the fix (docs/FAULTS.md rows R15-R19)."""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lstmcast import Forecaster
from lstmcast.cli import app
from lstmcast.config import load_config
from lstmcast.data.io import read_table
from lstmcast.errors import CheckpointError, ConfigError, DataError
from tests.conftest import seasonal_frame, small_config

H = 4


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


# -- R15: data at scale and odd inputs -----------------------------------------------------------------------------
def test_r15_a_row_with_an_extra_field_names_the_line_and_both_field_counts(tmp_path):
    lines = ["date,y"] + [f"2024-01-{d:02d},{d}" for d in range(1, 21)]
    lines[7] += ",99"  # line 8 of the file
    path = tmp_path / "extra.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    text = str(err.value)
    assert "line 8 has 3 fields but the header (line 1) has 2" in text and "remove the extra field" in text
    assert "C error" not in text and "tokenizing" not in text


def test_r15_an_unclosed_quote_names_its_line(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text('date,y\n2024-01-01,1\n2024-01-02,"2\n2024-01-03,3\n')
    with pytest.raises(DataError, match=r"a quote \(\"\) opened on line 3 is never closed") as err:
        read_table(path)
    assert "EOF inside string" not in str(err.value)


def test_r15_pandas_date_warnings_become_one_lstmcast_log_line(tmp_path, caplog):
    from lstmcast.data.load import load_series

    df = seasonal_frame(80, freq="D", start="2024-01-13")
    df["time"] = df["time"].dt.strftime("%d/%m/%Y")  # 13/01/2024 first: pandas guesses day first and warns
    path = tmp_path / "dayfirst.csv"
    df.to_csv(path, index=False)
    cfg = load_config(None, [f"data.path={path}", "data.time_col=time", "data.target=y", "data.horizon=4"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the reader fails the test
        with caplog.at_level(logging.WARNING, logger="lstmcast"):
            series = load_series(None, cfg)
    assert len(series.values[0]) == 80  # read day first (issue 22: no pandas guess, no warning)
    assert pd.Timestamp(series.times[0][0]) == pd.Timestamp("2024-01-13")
    from lstmcast.data.io import warnings_as_log

    with warnings.catch_warnings():  # what pandas still warns while reading becomes one lstmcast line
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING, logger="lstmcast"), warnings_as_log("the data"):
            for _ in range(2):
                warnings.warn("Parsing dates in %d/%m/%Y format when dayfirst=False (the default) was specified. "
                              "Pass `dayfirst=True` or specify a format to silence this warning.", UserWarning,
                              stacklevel=2)
    assert caplog.text.count("the timestamps were read day first (%d/%m/%Y)") == 1
    assert "data.time_format: '%d/%m/%Y'" in caplog.text and "dayfirst=False" not in caplog.text


def test_r15_a_key_given_twice_in_a_config_file_is_refused_naming_key_and_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("data:\n  target: y\nmodel:\n  hidden_size: 8\ndata:\n  time_col: t\n")
    with pytest.raises(ConfigError, match=r"key 'data' appears twice \(lines 1 and 5\)"):
        load_config(path)
    path.write_text("data:\n  target: y\n  window: 3\n  target: z\n")
    with pytest.raises(ConfigError, match=r"key 'data.target' appears twice \(lines 2 and 4\)"):
        load_config(path)
    res = cli("doctor", "-c", str(path))
    assert res.exit_code == 2 and "appears twice" in res.output


def test_r15_yaml_merge_keys_and_lists_of_mappings_are_not_duplicates():
    from lstmcast.safe_yaml import load_yaml

    assert load_yaml("a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\ne: [{f: 1}, {f: 2}]", "t") == \
        {"a": {"b": 1}, "c": {"b": 1, "d": 2}, "e": [{"f": 1}, {"f": 2}]}


def _long(n_series: int = 3, n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_series):
        t = np.arange(n)
        frames.append(pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="h"), "id": f"s{k}",
                                    "y": 10 * (k + 1) + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(size=n),
                                    "capacity": float(k + 1), "x": rng.normal(size=n)}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def covariate_model() -> Forecaster:
    """A tiny long-table model with a numeric static (1, 2, 3 in training) and a known-future covariate."""
    cfg = small_config(data={"id_col": "id", "horizon": H, "window": 12, "season": 12,
                             "static_features": ["capacity"], "future_features": ["x"]},
                       train={"max_epochs": 1, "threads": 1})
    df = _long()
    return Forecaster(cfg).fit(df)


def _future(df: pd.DataFrame) -> pd.DataFrame:
    last = df["time"].max()
    times = pd.date_range(last + pd.Timedelta(hours=1), periods=H, freq="h")
    return pd.DataFrame([{"time": t, "id": i, "x": 0.0} for i in df["id"].unique() for t in times])


def test_r15_a_future_given_as_an_array_says_which_types_are_accepted(covariate_model):
    df = _long()
    with pytest.raises(DataError, match=r"expected a CSV/Parquet path \(str or pathlib.Path\) or a pandas "
                                        r"DataFrame, got a numpy.ndarray") as err:
        covariate_model.predict(df, future=np.zeros((3, H, 1)))
    assert str(err.value).startswith("future covariates: ")
    with pytest.raises(DataError, match=r"got a numpy.ndarray"):
        covariate_model.predict(np.zeros((10, 3)), future=_future(df))


def test_r15_a_numeric_static_given_as_text_names_the_column_and_a_value(covariate_model):
    df = _long()
    df["capacity"] = df["capacity"].astype(str)
    with pytest.raises(DataError, match=r"static feature 'capacity' held numbers in training but holds text here "
                                        r"\(series 's0': '1.0'\).*pd.to_numeric"):
        covariate_model.predict(df, future=_future(df))


def test_r15_a_new_series_static_far_outside_the_training_range_is_warned_about(covariate_model, caplog):
    df = _long()
    with caplog.at_level(logging.WARNING, logger="lstmcast"):
        covariate_model.predict(df, future=_future(df))
    assert "far outside" not in caplog.text  # the training series themselves: no warning
    new = _long(1, seed=1).assign(id="fresh", capacity=1e30)
    with caplog.at_level(logging.WARNING, logger="lstmcast"):
        out = covariate_model.predict(new, future=_future(new))
    assert len(out) == H
    assert "series 'fresh': static feature 'capacity' is 1e+30, far outside its training range 1 to 3" in caplog.text
    with pytest.raises(DataError, match=r"series 'huge': static feature 'capacity' is 3e\+38, so far from the "
                                        r"training values .* that the model's input overflows"):
        covariate_model.predict(new.assign(id="huge", capacity=3e38), future=_future(new.assign(id="huge")))


# -- R16: tuning ---------------------------------------------------------------------------------------------------
def test_r16_a_zero_timeout_is_refused_not_read_as_no_limit():
    from lstmcast.tuning.study import parse_duration

    assert parse_duration("90s") == 90.0 and parse_duration("1h30m") == 5400.0
    for zero in ("0s", "0", "0m0s"):
        with pytest.raises(ConfigError, match=r"--timeout .* is zero: no trial could start"):
            parse_duration(zero)


def test_r16_train_into_a_tuning_folder_is_refused_naming_what_it_is(tmp_path):
    csv = tmp_path / "s.csv"
    seasonal_frame(200).to_csv(csv, index=False)
    study = tmp_path / "tune"
    study.mkdir()
    (study / "study.db").write_bytes(b"")
    (study / "best.yaml").write_text("data: {}\n")
    res = cli("train", "--data", str(csv), "--time-col", "time", "--target", "y", "--horizon", "4", "--run",
              str(study))
    assert res.exit_code == 2, res.output
    assert "is a tuning study folder (it holds study.db, best.yaml)" in res.output
    assert f"lstmcast train -c {study / 'best.yaml'}" in res.output
    assert sorted(p.name for p in study.iterdir() if p.name != ".lock") == ["best.yaml", "study.db"]


# -- R17: plots ----------------------------------------------------------------------------------------------------
def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_r17_series_ids_in_plot_titles_are_escaped_and_shortened(tmp_path, monkeypatch):
    from lstmcast.data.validate import SeriesSet
    from lstmcast.report import plots

    ids = ["price $5 and $6", "x" * 3000]
    times = [pd.date_range("2024-01-01", periods=30, freq="D").to_numpy()] * 2
    series = SeriesSet(ids=ids, times=times, values=[np.arange(30, dtype=np.float32)[:, None]] * 2, targets=["y"],
                       features=[], freq="D", time_col="date", id_col="id", layout="long")
    future = pd.date_range("2024-01-31", periods=3, freq="D")
    forecast = pd.DataFrame({"id": np.repeat(ids, 3), "date": np.tile(future, 2), "y": 1.0})
    meta = SimpleNamespace(targets=["y"], layout="long", id_col="id", time_col="date", horizon=3, window=6,
                           intervals=None)
    titles: list[str] = []
    real_save = plots._save

    def save(fig, path):
        titles.extend(ax.get_title() for ax in fig.axes)
        real_save(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    plots.forecast_plot(series, forecast, meta, None, tmp_path / "f.png")
    # two panels a series (history and backtests; the forecast zoomed): every title escaped and cut
    assert titles[0] == r"series price \$5 and \$6: history, backtest forecasts and forecast"  # no mathtext
    assert titles[1].startswith(r"series price \$5 and \$6: the forecast")
    assert len(titles[2]) < 120 and titles[2].startswith("series xxx") and "...: history" in titles[2]
    width, height = _png_size(tmp_path / "f.png")
    plain = forecast.assign(id=np.repeat(["a", "b"], 3))
    plots.forecast_plot(SeriesSet(ids=["a", "b"], times=times, values=series.values, targets=["y"], features=[],
                                  freq="D", time_col="date", id_col="id", layout="long"),
                        plain, meta, None, tmp_path / "plain.png")
    # a 3,000-character title made it 30,357 px wide (21x); cut to 60 characters it widens the plot by < 30%
    assert width < 1.3 * _png_size(tmp_path / "plain.png")[0], width


# -- R18: memory at mid scale -------------------------------------------------------------------------------------
def test_r18_csv_outputs_are_formatted_and_written_in_parts_never_as_one_string(tmp_path, monkeypatch):
    from lstmcast import outputs

    monkeypatch.setattr(outputs, "CSV_ROWS", 10)
    formatted: list[int] = []
    real = pd.DataFrame.to_csv

    def to_csv(self, *args, **kwargs):
        formatted.append(len(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    df = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=25, freq="h", tz="Europe/Paris"),
                       "id": ["a,b"] * 25, "y": np.random.default_rng(0).normal(size=25)})
    outputs.write_csv(df, tmp_path / "f.csv")
    assert formatted == [10, 10, 5]  # the old write_csv formatted all 25 rows into one string, then encoded it
    assert (tmp_path / "f.csv").read_text() == real(df, index=False)  # the same bytes as one to_csv
    outputs.write_csv(df.iloc[:0], tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text() == "t,id,y\n"


def test_r18_the_backtest_frame_comes_in_parts_that_make_up_the_whole():
    from lstmcast.inference.backtest import Backtest

    n, H = 7, 3
    rng = np.random.default_rng(0)
    times = [pd.date_range("2024-01-01", periods=20, freq="D").to_numpy()] * 2
    series = SimpleNamespace(ids=["a", "b"], times=times)
    meta = SimpleNamespace(layout="long", targets=["y"], tz="Europe/Paris", intervals=None)
    bt = Backtest(series_idx=np.array([0, 0, 0, 1, 1, 1, 1]), origins=np.array([10, 12, 14, 9, 11, 13, 15]),
                  actual=rng.normal(size=(n, H, 1)), forecasts={"model": rng.normal(size=(n, H, 1))},
                  scale=np.ones((n, 1, 1)), metrics={})
    parts = list(bt.frames(series, meta, rows=6))  # 2 origins x 3 steps a part
    assert [len(p) for p in parts] == [6, 6, 6, 3]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), bt.frame(series, meta))
    assert bt.frame(series, meta)["time"].iloc[4] == pd.Timestamp("2024-01-14", tz="UTC").tz_convert("Europe/Paris")


def test_r18_predict_forwards_at_most_1024_windows_at_once():
    import torch

    from lstmcast.inference.predict import _predict_scaled

    seen: list[int] = []

    def model(xb, future=None, static=None):
        seen.append(len(xb))
        return torch.zeros(len(xb), 2, 1)

    out = _predict_scaled(model, np.zeros((3000, 5, 1), dtype=np.float32))
    assert out.shape == (3000, 2, 1)
    assert max(seen) <= 1024 and sum(seen) == 3000  # 4,096 at once cost up to 117 MB more at 20k series


# -- R19: smaller --------------------------------------------------------------------------------------------------
def test_r19_one_series_on_two_ranks_advises_what_works(tmp_path):
    from lstmcast.data.shard import read_shard

    path = tmp_path / "one.parquet"
    pd.DataFrame({"id": ["a"] * 3, "t": [1, 2, 3], "y": [1.0, 2.0, 3.0]}).to_parquet(path)
    with pytest.raises(ConfigError) as err:
        read_shard(path, "id", 0, 2)
    assert "--nproc 1" not in str(err.value) and "set data.shard_series=false" in str(err.value)
    pd.DataFrame({"id": ["a", "b", "c"], "t": [1, 1, 1], "y": [1.0, 2.0, 3.0]}).to_parquet(path)
    with pytest.raises(ConfigError, match=r"use at most 3 ranks \(--nproc 3\)"):
        read_shard(path, "id", 0, 4)


def test_r19_a_negative_epoch_in_a_checkpoint_says_not_a_non_negative_integer(tmp_path):
    from lstmcast.training import checkpoint as ck

    state = {"format_version": ck.CHECKPOINT_FORMAT, "step": 3, "epoch": -1, "finished": False, "config": {},
             "fingerprint": {}, "history": [], "rng": {}, "optimizer": {}, "scheduler": {}, "early_stopping": {},
             "guard": {}}
    with pytest.raises(CheckpointError, match=r"'epoch' is -1, not a non-negative integer"):
        ck._parse_state(json.dumps(state).encode(), tmp_path / "state.json")
    del state["step"]
    with pytest.raises(CheckpointError, match=r"'step' is missing, not a non-negative integer"):
        ck._parse_state(json.dumps(state).encode(), tmp_path / "state.json")


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("r19")
    fc = Forecaster(small_config(train={"max_epochs": 1, "threads": 1})).fit(seasonal_frame(200))
    fc.save(d / "run")
    return d / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def test_r19_a_fifo_or_device_in_a_run_folder_is_named_for_what_it_is(saved_run, tmp_path):
    from lstmcast.run.folder import read_run

    run = _copy(saved_run, tmp_path)
    (run / "meta.json").unlink()
    os.mkfifo(run / "meta.json")
    with pytest.raises(CheckpointError, match=r"meta.json is a FIFO \(named pipe\), not a regular file"):
        read_run(run)  # returns at once: the FIFO is never opened
    (run / "meta.json").unlink()
    (run / "meta.json").write_bytes((saved_run / "meta.json").read_bytes())
    (run / "model.safetensors").unlink()
    (run / "model.safetensors").symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match=r"model.safetensors is a symbolic link to a character device "
                                              r"\(/dev/zero\), not a regular file"):
        read_run(run)
    (run / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model.safetensors is missing"):
        read_run(run)


def _failed(exitcode: int):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    return ChildFailedError("lstmcast.cli", {1: ProcessFailure(local_rank=1, pid=4242, exitcode=exitcode,
                                                                error_file="<N/A>")})


@pytest.mark.parametrize("exitcode, shown", [(-9, False), (7, True)])
def test_r19_torch_elastic_log_lines_are_dropped_when_lstmcast_names_the_lost_rank(monkeypatch, capsys, caplog,
                                                                                     exitcode, shown):
    import torch.distributed.run as torchrun

    from lstmcast.launch import launch

    def killed(ns):
        logging.getLogger("torch.distributed.elastic.agent.server.api").error(
            "failed (exitcode: %d) local_rank: 1 (pid: 4242) of binary", exitcode)
        logging.getLogger("lstmcast.training").warning("a line of lstmcast's own")
        raise _failed(exitcode)

    monkeypatch.setattr(torchrun, "run", killed)
    with caplog.at_level(logging.WARNING):
        code = launch(2, ["train", "-c", "c.yaml", "--nproc", "2", "--run", "r"], add_run=False)
    err = capsys.readouterr().err
    assert "a line of lstmcast's own" in caplog.text  # only torch elastic's lines are held back
    if exitcode == -9:
        assert code == 130 and "rank 1 was killed by SIGKILL" in err
    else:  # a failure lstmcast does not explain: torch's account is replayed
        assert code == 7 and "rank 1 failed with exit code 7" in err
    assert ("failed (exitcode:" in caplog.text) is shown
