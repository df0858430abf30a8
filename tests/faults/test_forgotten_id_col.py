"""D3: a long table read without --id-col: the duplicated-timestamps error names the column that would make
the timestamps unique, and the setting (issue 22: '1015 duplicated timestamps' gave no hint)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast.config import validate_config
from lstmcast.data.io import read_table
from lstmcast.data.validate import validate_frame
from lstmcast.errors import DataError
from tests.conftest import run_cli, small_config


def long_table(n_series: int = 3, n: int = 60) -> pd.DataFrame:
    times = pd.date_range("2024-01-01", periods=n, freq="h")
    parts = [pd.DataFrame({"time": times, "meter": f"m{k}", "row": np.arange(n) + k * n,
                           "temp": np.random.default_rng(k).normal(size=n), "y": np.sin(np.arange(n) / 4) + k})
             for k in range(n_series)]
    return pd.concat(parts, ignore_index=True)


def test_forgotten_id_col_names_the_column(tmp_path):
    path = tmp_path / "long.csv"
    long_table().to_csv(path, index=False)
    cfg = validate_config(small_config(data={"target": "y"}))
    with pytest.raises(DataError, match=r"120 duplicated timestamps \(first 2024-01-01 00:00:00 at line 62\): the "
                                        r"table looks like several series in long format, one per value of column "
                                        r"'meter' \(3 values\).*set data\.id_col: meter \(CLI: --id-col meter\)"):
        validate_frame(read_table(path), cfg.data)
    fixed = validate_config(small_config(data={"target": "y", "id_col": "meter"}))
    assert len(validate_frame(read_table(path, id_col="meter"), fixed.data).ids) == 3


def test_true_duplicates_keep_the_plain_message():
    df = long_table(1)
    df = pd.concat([df, df.iloc[[5]]], ignore_index=True)  # the same row twice: no column tells them apart
    cfg = validate_config(small_config(data={"target": "y"}))
    with pytest.raises(DataError, match=r"1 duplicated timestamps: .*remove or aggregate") as err:
        validate_frame(read_table(df), cfg.data)
    assert "id_col" not in str(err.value)


def test_cli_forgotten_id_col_exit_3(tmp_path):
    path = tmp_path / "long.csv"
    long_table().to_csv(path, index=False)
    res = run_cli("train", "--data", str(path), "--time-col", "time", "--target", "y", "--run", str(tmp_path / "r"),
                  cwd=tmp_path)
    assert res.returncode == 3
    assert "--id-col meter" in res.stderr
