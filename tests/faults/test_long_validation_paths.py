"""A long table is validated in whole-table numpy passes (data/longtable.py) or, where that path cannot
decide, by the per-series loop; both must accept and refuse the same tables and return the same series
(FAULTS D2 gaps, D3 duplicates, D4 unsorted rows, D16 ids; issue 14: the loop cost 5 s on 10k series)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmcast.config import validate_config
from lstmcast.data import longtable, validate
from lstmcast.data.io import read_table


def _both(df: pd.DataFrame, monkeypatch, **data):
    """(result of the fast path, result of the loop): a SeriesSet or the error text; and whether fast decided."""
    cfg = validate_config({"data": {"time_col": "date", "target": "y", "features": ["x"], "id_col": "id",
                                    "horizon": 2, **data}}).data
    decided = []
    real = longtable.validate_long

    def spy(*args):
        decided.append(real(*args) is not None)
        return real(*args)

    out = []
    for fn in (spy, lambda *a: None):
        monkeypatch.setattr(validate, "validate_long", fn)  # where validate_frame looks it up
        try:
            out.append(validate.validate_frame(read_table(df, None, "id"), cfg))
        except Exception as exc:  # noqa: BLE001 - the two paths must raise alike, whatever it is
            out.append(f"{type(exc).__name__}: {exc}")
    return out[0], out[1], decided[0]


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return (a.ids == b.ids and a.freq == b.freq and a.tz == b.tz and a.notes == b.notes and a.layout == b.layout
            and len(a.values) == len(b.values)
            and all(np.array_equal(x, y) for x, y in zip(a.times, b.times))
            and all(x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True) for x, y in zip(a.values, b.values)))


def _table(seed: int, tz: str | None = None, freq: str = "D", n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n):
        length = int(rng.integers(5, 40))
        t = pd.date_range("2021-03-20", periods=length, freq=freq, tz=tz)
        keep = rng.random(length) > (0.2 if i % 3 == 0 else 0.0)  # every third series has gaps
        keep[0] = keep[-1] = True
        y = rng.standard_normal(length)
        y[rng.random(length) < 0.05] = np.nan
        parts.append(pd.DataFrame({"id": f"s{i:02d}", "date": t[keep], "y": y[keep], "x": rng.random(keep.sum())}))
    df = pd.concat(parts)
    return (df.sample(frac=1, random_state=seed) if seed % 2 else df).reset_index(drop=True)


@pytest.mark.parametrize("missing", ["interpolate", "ffill", "drop-windows", "error"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tz,freq", [(None, "D"), (None, "h"), ("Europe/Berlin", "D"), ("Europe/Berlin", "h")])
def test_random_long_tables_give_the_same_series_or_error_on_both_paths(monkeypatch, seed, missing, tz, freq):
    fast, loop, _ = _both(_table(seed, tz, freq), monkeypatch, missing=missing)
    assert _same(fast, loop), (fast, loop)


def test_a_clean_table_with_gaps_and_unsorted_rows_is_decided_by_the_fast_path(monkeypatch):
    fast, loop, decided = _both(_table(1), monkeypatch, missing="interpolate")
    assert decided and _same(fast, loop)
    assert any("rows were not in time order" in n for n in fast.notes)  # D4, logged per series
    assert all(np.isfinite(v).all() for v in fast.values)  # D2 filled


def _clean(n_series: int = 3, length: int = 10) -> pd.DataFrame:
    t = pd.date_range("2022-01-01", periods=length, freq="D")
    return pd.concat([pd.DataFrame({"id": f"s{i}", "date": t, "y": np.arange(length, dtype=float) + i,
                                    "x": 1.0 + i}) for i in range(n_series)], ignore_index=True)


@pytest.mark.parametrize("case,message", [
    ("duplicate", "duplicated timestamps in series 's2'"),  # D3, in the last series
    ("gap", "series 's1' has 1 missing timestamps"),  # D2 under missing: error
    ("off_grid", "are off the 'D' grid"),
    ("blank_id", "series id column 'id' has 1 empty cells"),
])
def test_refusals_are_the_loops_messages(monkeypatch, case, message):
    df = _clean()
    if case == "duplicate":
        df = pd.concat([df, df.iloc[[25]]], ignore_index=True)
    elif case == "gap":
        df = df.drop(index=14).reset_index(drop=True)
    elif case == "off_grid":
        df.loc[13, "date"] += pd.Timedelta("1h")
    elif case == "blank_id":
        df.loc[4, "id"] = " "
    fast, loop, decided = _both(df, monkeypatch, missing="error")
    assert not decided and fast == loop and message in fast


@pytest.mark.parametrize("keep", [1, 2])
@pytest.mark.parametrize("first", [True, False])
def test_a_series_of_one_or_two_rows_is_kept_on_the_tables_grid(monkeypatch, keep, first):
    """Issue 20: a table's series of 1 or 2 rows cannot show its step; the table's other series set it (a short
    first series too), and the series is kept with its rows (it trains padded or is forecast from them)."""
    df = _clean()
    short = "s0" if first else "s1"
    df = df[(df["id"] != short) | (df["date"] < df["date"].iloc[0] + pd.Timedelta(days=keep))].reset_index(drop=True)
    fast, loop, decided = _both(df, monkeypatch, missing="error")
    assert decided and _same(fast, loop), (fast, loop)  # the whole-table pass decides: no per-series loop
    assert fast.freq == "D" and fast.lengths()[fast.ids.index(short)] == keep


def test_ids_that_print_alike_and_categorical_ids_go_to_the_loop(monkeypatch):
    df = _clean().astype({"id": object})
    df.loc[df["id"] == "s1", "id"] = 1
    df.loc[df["id"] == "s2", "id"] = "1"  # D16: 1 and '1' would be one id once printed
    fast, loop, decided = _both(df, monkeypatch)
    assert not decided and _same(fast, loop)
    fast, loop, decided = _both(_clean().astype({"id": "category"}), monkeypatch)
    assert not decided and _same(fast, loop)


def test_filling_a_grouped_table_leaves_the_callers_frame_alone(monkeypatch):
    """Rows already in series and time order are read without copies; a fill must not write through."""
    df = _clean()
    df.loc[3, "y"] = np.nan
    fast, loop, decided = _both(df, monkeypatch, missing="interpolate")
    assert decided and _same(fast, loop)
    assert np.isnan(df.loc[3, "y"]) and fast.values[0][3, 0] == 3.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("missing", ["interpolate", "ffill", "drop-windows"])
def test_float32_columns_stay_float32_and_give_the_float64_result_on_both_paths(monkeypatch, seed, missing):
    """Float32 columns are not widened to float64 copies (issue 14: memory at 100k series); the fill still
    computes in float64, so the series equal those of the same values given as float64, bit for bit."""
    df = _table(seed)
    df["y"] = (df["y"] * 1e3).astype(np.float32)
    df["x"] = df["x"].astype(np.float32)
    wide = df.astype({"y": np.float64, "x": np.float64})
    assert validate._numeric(read_table(df, None, "id"), "y", "fp32").dtype == np.float32
    fast32, loop32, _ = _both(df, monkeypatch, missing=missing, freq="D")
    monkeypatch.undo()  # _both leaves the loop patched in
    fast64, loop64, decided = _both(wide, monkeypatch, missing=missing, freq="D")
    assert decided and _same(fast32, fast64) and _same(loop32, loop64) and _same(fast32, loop32)
