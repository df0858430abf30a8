"""Issue 20: panels of many short series. Every series of a long table trains (left-padded windows with a mask
channel where it is shorter than window + horizon) and is forecast; the split gives up validation and test where
a series cannot afford them; data.split: last-horizon holds out each series' last H points; the counts of what
trained, validated, was backtested and forecast are written and printed; a table that cannot train is refused
with its counts, fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmcast import Forecaster
from lstmcast.config import validate_config
from lstmcast.data.coverage import summary_lines
from lstmcast.data.io import read_table
from lstmcast.data.prepare import prepare, series_splits
from lstmcast.data.validate import validate_frame
from lstmcast.data.windows import build_index, left_pad, min_train_points, pad_for, split_points, window_starts
from lstmcast.errors import DataError

H = 6


def panel(lengths: list[int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for i, n in enumerate(lengths):
        t = np.arange(n)
        y = 50 + 5 * i + 3 * np.sin(2 * np.pi * t / 12) + 0.3 * rng.standard_normal(n)
        parts.append(pd.DataFrame({"id": f"s{i:02d}", "date": pd.date_range("2001-01-01", periods=n, freq="MS"),
                                   "y": y}))
    return pd.concat(parts, ignore_index=True)


def data_cfg(**extra):
    return validate_config({"data": {"time_col": "date", "target": "y", "id_col": "id", "horizon": H,
                                     "season": 12, **extra}}).data


def prepared(df: pd.DataFrame, **extra):
    cfg = data_cfg(**extra)
    return prepare(validate_frame(read_table(df, None, "id"), cfg), cfg)


def windows_of(prep, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Series i's training and validation windows (B, L + H, C) on the value channels (the mask dropped)."""
    lo, hi = prep.index.offsets[i], prep.index.offsets[i + 1]
    keep = [c for c in range(prep.scaled.shape[1]) if not (prep.mask_channel and c == prep.series.n_past_only)]
    span = prep.window + prep.horizon
    out = []
    for starts in (prep.index.train, prep.index.val):
        mine = starts[(starts >= lo) & (starts < hi)]
        out.append(np.stack([prep.scaled[s:s + span][:, keep] for s in mine]) if len(mine) else np.empty(0))
    return out[0], out[1]


# -- windows ----------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 120), window=st.integers(2, 40), horizon=st.integers(1, 20), frac=st.floats(0.0, 1.0))
def test_padded_windows_are_todays_windows_where_no_padding_is_needed(n, window, horizon, frac):
    """A series with room keeps exactly today's windows (no padding); a padded series has every window whose
    targets are real and whose inputs hold a real point, and among them, shifted by the padding, exactly
    today's windows (those whose inputs are all real)."""
    train_end = int(round(n * frac))
    p = pad_for(train_end, window, horizon)
    today = window_starts(0, train_end, window, horizon)
    padded = build_index([p + n], [_split(n, train_end)], window, horizon, pads=[p]).train
    if p == 0:
        assert np.array_equal(padded, today)
        return
    assert train_end < window + horizon and train_end >= min_train_points(horizon)
    assert np.all(padded + window >= p) and np.all(padded + window + horizon <= p + train_end)  # real targets
    assert np.all(padded + window - 1 >= p)  # at least one real input point
    assert len(padded) == train_end - horizon  # every one of them (one real input point or more)
    assert np.array_equal(padded[padded >= p] - p, today)


def _split(n: int, train_end: int):
    from lstmcast.data.windows import Split

    return Split(n=n, train_end=train_end, val_end=train_end)


def test_left_pad_repeats_the_first_row():
    v = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert np.array_equal(left_pad(v, 2), np.array([[0, 1], [0, 1], [0, 1], [2, 3], [4, 5]], dtype=np.float32))
    assert left_pad(v, 0) is v


def test_a_table_of_long_series_has_no_mask_and_todays_windows():
    """Single long series, and tables whose series all hold a window: no mask channel, no padding."""
    prep = prepared(panel([80, 90, 100]))
    assert not prep.mask_channel and prep.pads is None and prep.scaled.shape[1] == 1


def test_adding_a_two_point_series_leaves_every_other_series_windows_unchanged():
    base = prepared(panel([60, 70, 80, 100]))
    more = prepared(pd.concat([panel([60, 70, 80, 100]),
                               panel([2]).assign(id="zz", y=[3.0, 4.0])], ignore_index=True))
    assert more.mask_channel and not base.mask_channel  # the 2-point series needs a padded forecast window
    assert more.window == base.window
    for i in range(4):
        for a, b in zip(windows_of(base, i), windows_of(more, i)):
            assert np.array_equal(a, b)
        lo, hi = more.index.offsets[i], more.index.offsets[i + 1]
        assert np.all(more.scaled[lo:hi, more.series.n_past_only] == 1.0)  # all real


def test_short_series_train_on_padded_windows_with_the_padding_masked():
    prep = prepared(panel([100, 110, 120, 20]))
    i = 3
    p = prep.pads[i]
    assert prep.mask_channel and p == prep.window - 1
    lo = prep.index.offsets[i]
    rows = prep.scaled[lo:prep.index.offsets[i + 1]]
    mask = rows[:, prep.series.n_past_only]
    assert np.all(mask[:p] == 0.0) and np.all(mask[p:] == 1.0)
    assert np.all(rows[:p, 0] == rows[p, 0])  # edge padding: the first real value repeated
    train, _ = windows_of(prep, i)
    assert len(train) == prep.splits[i].train_end - H  # every window with a real input point and real targets


# -- splits -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 5, 7, 12, 13, 19, 20, 40, 126])
def test_last_horizon_split_holds_out_exactly_h_per_series(n):
    cfg = data_cfg(split="last-horizon")
    sp = series_splits([n], cfg, True)[0]
    need = min_train_points(H)
    if n - H >= need:  # a test part: exactly the last H points
        assert sp.n - sp.val_end == H
        # validation: data.min_val_horizons (2) horizons before it, one where two leave no training window
        assert sp.val_end - sp.train_end == (2 * H if n - 3 * H >= need else H if n - 2 * H >= need else 0)
        assert sp.train_end >= need
    else:  # too short to hold out a test part and still train: it trains on everything
        assert sp.train_end == sp.val_end == n


def test_auto_split_is_fraction_for_one_series_and_last_horizon_for_a_table():
    cfg = data_cfg()
    one, table = series_splits([200], cfg, False)[0], series_splits([200], cfg, True)[0]
    assert one == split_points(200, H, cfg.val_fraction, cfg.test_fraction, cfg.min_val_horizons)
    assert (table.train_end, table.val_end) == (200 - 3 * H, 200 - H)


def test_last_horizon_backtest_scores_each_series_last_h_points_once():
    lengths = [40, 50, 60, 9]
    df = panel(lengths)
    fc = Forecaster(_small()).fit(df)
    fc.backtest()
    bt = fc.backtest_
    backtested = [i for i, n in enumerate(lengths) if n - H >= min_train_points(H)]
    assert sorted(bt.series_idx.tolist()) == backtested  # one origin per series that can afford a test part
    for k, i in enumerate(bt.series_idx.tolist()):
        assert bt.origins[k] == lengths[i] - H
        y = df.loc[df["id"] == f"s{i:02d}", "y"].to_numpy()
        assert np.allclose(bt.actual[k, :, 0], y[-H:])


# -- forecasting and counts -------------------------------------------------------------------------
def _small(**data):
    return {"data": {"time_col": "date", "target": "y", "id_col": "id", "horizon": H, "season": 12, **data},
            "model": {"hidden_size": 8, "num_layers": 1},
            "train": {"max_epochs": 2, "min_steps": 0, "min_epoch_steps": 1, "refit": False, "precision": "fp32"}}


def test_a_one_point_series_is_forecast_and_the_counts_match_the_table():
    lengths = [1, 2, 8, 30, 40, 50]
    df = panel(lengths)
    fc = Forecaster(_small()).fit(df)
    out = fc.predict()
    assert out.groupby("id").size().to_dict() == {f"s{i:02d}": H for i in range(len(lengths))}
    assert np.isfinite(out["y"]).all()
    one = out[out["id"] == "s00"]
    assert one["date"].iloc[0] == pd.Timestamp("2001-02-01")  # the month after its only point
    counts = fc.backtest()["series"]
    n = np.array(lengths)
    need = min_train_points(H)
    assert counts["total"] == len(lengths)
    assert counts["trained"]["count"] == int((n >= need).sum())
    assert [x["id"] for x in counts["trained"]["left_out"]] == ["s00", "s01"]
    assert counts["validated"]["count"] == int((n - 2 * H >= need).sum())
    assert counts["backtested"]["count"] == int((n - H >= need).sum())
    assert counts["forecast"] == {"count": 6, "from_padded_window": int((n < fc.meta_.window).sum()),
                                  "never_trained": 2}
    printed = "\n".join(summary_lines(counts))
    assert f"series trained: {counts['trained']['count']} of 6" in printed and "'s00': 1 point:" in printed
    assert f"series backtested: {counts['backtested']['count']} of 6" in printed
    assert "series forecast: 6 of 6" in printed
    from lstmcast.export import describe_inputs  # an ONNX deployment is told where the mask goes

    x = describe_inputs(fc.meta_, fc.model_, "float32")[0]
    assert x["channels"] == ["y", "mask"] and x["parts"]["mask"] == ["mask"] and x["shape"][2] == 2


def test_a_table_with_no_trainable_series_is_a_data_error_with_counts():
    df = panel([1, 3, 3, 5])
    with pytest.raises(DataError, match=r"no series can train: all 4 series have fewer than horizon \+ 1 = 7 points "
                                        r"\(2 have 3 points, 1 have 1 point, 1 have 5 points; the longest \('s03'\) "
                                        r"has 5\).*lower data.horizon to at most 4"):
        Forecaster(_small()).fit(df)


def test_the_refusal_counts_points_after_gap_filling_too():
    """With a fill policy rows may become points; prepare refuses with the same counts after the filling."""
    df = panel([3, 4])
    df = df.drop(index=[1]).reset_index(drop=True)  # a gap in s00: 2 rows span 3 months
    with pytest.raises(DataError, match=r"no series can train: all 2 series .*the longest \('s01'\) has 4"):
        Forecaster(_small(missing="interpolate")).fit(df)


def test_a_million_one_row_series_are_refused_fast():
    """Issue 21 item 15: refused from the row counts, before any per-series work (143 s and 5.5 GB before)."""
    import time

    n = 200_000
    df = pd.DataFrame({"id": np.arange(n), "date": pd.Timestamp("2020-01-01"), "y": 1.0})
    cfg = data_cfg()
    t0 = time.perf_counter()
    want = r"all 200,000 series have fewer than horizon \+ 1 = 7 points \(200,000 have 1 "
    with pytest.raises(DataError, match=want):
        validate_frame(read_table(df, None, "id"), cfg)
    assert time.perf_counter() - t0 < 10.0  # ~0.3 s here; the per-series loop took ~30 s for this many


# -- scaling and the log transform ------------------------------------------------------------------
def test_a_series_too_short_to_measure_its_spread_borrows_the_tables():
    """A 1-point series' std would be 1 in its own units (the constant-column rule): it takes the median
    coefficient of variation of the table times its own level instead; long series keep their own."""
    df = panel([40, 50, 60, 1])
    df.loc[df["id"] == "s03", "y"] = 1e4
    prep = prepared(df)
    cv = np.median(prep.stds[:3, 0] / np.abs(prep.means[:3, 0]))
    assert prep.stds[3, 0] == pytest.approx(1e4 * cv)
    alone = [prepared(panel([40, 50, 60])).stds[i, 0] for i in range(3)]
    assert np.allclose(prep.stds[:3, 0], alone)
    logged = prepared(df, transform="log")
    assert logged.stds[3, 0] == pytest.approx(np.median(logged.stds[:3, 0]))


def test_log_transform_forecasts_in_original_units_and_refuses_non_positive_targets():
    df = panel([30, 40, 50, 3])
    fc = Forecaster(_small(transform="log")).fit(df)
    assert fc.meta_.transform == "log"
    prep = fc.prepared_
    y0 = df.loc[df["id"] == "s00", "y"].to_numpy()
    lo = prep.index.offsets[0] + prep.pad_of(0)
    assert prep.scaled[lo, 0] == pytest.approx((np.log(y0[0]) - prep.means[0, 0]) / prep.stds[0, 0], abs=1e-4)
    out = fc.predict()
    last = df.groupby("id")["y"].last()
    ratio = out.groupby("id")["y"].mean() / last
    assert np.all((ratio > 0.5) & (ratio < 2.0))  # exp'ed back: the level of the data, not of its log
    metrics = fc.backtest()
    assert metrics["naive"]["MASE"] == Forecaster(_small()).fit(df).backtest()["naive"]["MASE"]  # raw baselines
    bad = df.copy()
    bad.loc[5, "y"] = 0.0
    with pytest.raises(DataError, match=r"data.transform is 'log' but series 's00' has 1 target values <= 0"):
        Forecaster(_small(transform="log")).fit(bad)


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6), data=st.data())
def test_the_one_gather_padding_equals_left_pad_and_a_mask_per_series(lengths, data):
    from lstmcast.data.prepare import padded_with_mask

    rng = np.random.default_rng(len(lengths))
    scaled = [rng.standard_normal((n, 3)).astype(np.float32) for n in lengths]
    pads = [data.draw(st.integers(0, 5)) for _ in lengths]
    at = data.draw(st.integers(0, 3))
    flat, padded = padded_with_mask(scaled, pads, at)
    ref = [np.insert(left_pad(s, p), at, np.r_[np.zeros(p), np.ones(len(s))], axis=1) for s, p in zip(scaled, pads)]
    assert padded == [p + n for p, n in zip(pads, lengths)]
    assert np.array_equal(flat, np.concatenate(ref)) and flat.dtype == np.float32


def test_a_new_one_point_series_at_predict_time_is_scaled_like_its_peers():
    """predict(new data) with a series the model never saw, of one row: its std is the trained series' median
    coefficient of variation times its level, as in training (not std 1 in its own units)."""
    from lstmcast.inference.predict import series_scalers

    df = panel([30, 40, 50, 2])
    fc = Forecaster(_small()).fit(df)
    new = pd.concat([df, pd.DataFrame({"id": ["zz"], "date": [pd.Timestamp("2001-01-01")], "y": [5000.0]})])
    series = fc.series(new)
    mean, std = series_scalers(series, fc.meta_, fc.scaler_)
    i = series.ids.index("zz")
    known = [series.ids.index(f"s{k:02d}") for k in range(3)]
    cv = np.median(std[known, 0] / np.abs(mean[known, 0]))
    assert mean[i, 0] == 5000.0 and std[i, 0] == pytest.approx(5000.0 * cv)
    out = fc.predict(new)
    assert np.isfinite(out.loc[out["id"] == "zz", "y"]).all() and (out["id"] == "zz").sum() == H
