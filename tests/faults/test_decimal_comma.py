"""D6: a CSV written with decimal commas ('12,5', European spreadsheets, ';'-separated) is read with
data.decimal: ','; without it the text-cell error says which setting reads it (issue 22: no option, no hint)."""

from __future__ import annotations

import numpy as np
import pytest

from lstmcast.config import validate_config
from lstmcast.data.io import read_table
from lstmcast.data.validate import validate_frame
from lstmcast.errors import ConfigError, DataError
from tests.conftest import seasonal_frame, small_config


def _write(tmp_path):
    df = seasonal_frame(120)
    path = tmp_path / "eu.csv"
    df.to_csv(path, sep=";", decimal=",", index=False)
    return path, df


def _load(path, **data):
    cfg = validate_config(small_config(data=data))
    return validate_frame(read_table(path, cfg.data.delimiter, cfg.data.id_col, cfg.data.decimal), cfg.data)


def test_decimal_comma_refused_with_the_setting_that_reads_it(tmp_path):
    path, _ = _write(tmp_path)
    with pytest.raises(DataError, match=r"must be numeric but holds text: '\d+,\d+' at line 2, line 3.* \(120 "
                                        r"cells\): fix or blank those cells \(it looks like a decimal comma: set "
                                        r"data\.decimal: ','"):
        _load(path, delimiter=";")


def test_decimal_comma_read_with_data_decimal(tmp_path):
    path, df = _write(tmp_path)
    series = _load(path, delimiter=";", decimal=",")
    np.testing.assert_allclose(series.values[0][:, 0], df["y"].to_numpy(), rtol=1e-6)


def test_plain_text_gets_no_decimal_hint():
    df = seasonal_frame(120)
    df["y"] = df["y"].astype(object)
    df.loc[3, "y"] = "n/a?"
    with pytest.raises(DataError) as err:
        validate_frame(read_table(df), validate_config(small_config()).data)
    assert "decimal" not in str(err.value)


def test_decimal_equal_to_the_delimiter_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.decimal ',' is also the column delimiter"):
        validate_config(small_config(data={"decimal": ","}))
