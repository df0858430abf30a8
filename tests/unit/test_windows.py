"""Window arithmetic (data/windows.py), property-tested: off-by-one errors are the classic forecasting bug.

A window starting at s reads inputs [s, s + L) and targets [s + L, s + L + H) of one series; it belongs to
the split region that holds its targets.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmcast.data.windows import Roles, build_index, complete_starts, gather, origins, split_points, window_starts
from lstmcast.inference.backtest import backtest_origins

FAST = settings(max_examples=150, deadline=None)

lengths = st.integers(min_value=1, max_value=400)
windows = st.integers(min_value=1, max_value=64)
horizons = st.integers(min_value=1, max_value=24)


@FAST
@given(lo=st.integers(0, 300), extent=st.integers(0, 300), L=windows, H=horizons)
def test_window_starts_are_exactly_the_windows_whose_targets_lie_in_the_region(lo, extent, L, H):
    hi = lo + extent
    starts = window_starts(lo, hi, L, H)
    brute = [s for s in range(0, hi) if s + L >= lo and s + L + H <= hi]
    assert starts.tolist() == brute
    for s in starts:
        assert s >= 0  # inputs inside the series
        assert lo <= s + L and s + L + H <= hi  # targets right after the inputs, inside [lo, hi)


@FAST
@given(n=st.integers(2, 2000), H=horizons, val=st.floats(0.01, 0.49), test=st.floats(0.01, 0.49))
def test_split_points_partition_the_series_by_time(n, H, val, test):
    sp = split_points(n, H, val, test)
    assert sp.n == n
    assert sp.train_end <= sp.val_end <= n
    assert sp.val_end - sp.train_end >= H and n - sp.val_end >= H  # at least one horizon each
    assert sp.val_end - sp.train_end == max(H, round(n * val))
    assert n - sp.val_end == max(H, round(n * test))


@FAST
@given(finite=st.lists(st.booleans(), min_size=1, max_size=120), span=st.integers(1, 30))
def test_complete_starts_keeps_only_fully_finite_spans(finite, span):
    fin = np.array(finite)
    starts = np.arange(0, max(0, len(fin) - span + 1))
    kept = complete_starts(starts, fin, span)
    assert kept.tolist() == [s for s in starts if fin[s:s + span].all()]


@st.composite
def series_sets(draw):
    L, H = draw(windows), draw(horizons)
    n_series = draw(st.integers(1, 5))
    lens = [draw(st.integers(L + 3 * H, L + 3 * H + 200)) for _ in range(n_series)]
    return L, H, lens


@FAST
@given(case=series_sets(), val=st.floats(0.05, 0.3), test=st.floats(0.05, 0.3))
def test_build_index_never_leaks_across_the_split_or_a_series_boundary(case, val, test):
    L, H, lens = case
    splits = [split_points(n, H, val, test) for n in lens]
    idx = build_index(lens, splits, L, H)
    off = idx.offsets
    assert off.tolist() == [0, *np.cumsum(lens).tolist()]
    for name, starts in (("train", idx.train), ("val", idx.val)):
        series = np.searchsorted(off, starts, side="right") - 1
        local = starts - off[series]
        assert (local >= 0).all()
        assert (starts + L + H <= off[series + 1]).all()  # the window ends inside its own series
        for s, i in zip(local, series):
            sp = splits[i]
            if name == "train":
                assert s + L + H <= sp.train_end  # every train target before train_end
            else:
                assert sp.train_end <= s + L and s + L + H <= sp.val_end  # val targets in [train_end, val_end)
    for i, sp in enumerate(splits):  # and no window was dropped
        assert np.sum((idx.train >= off[i]) & (idx.train < off[i + 1])) == len(window_starts(0, sp.train_end, L, H))
        assert np.sum((idx.val >= off[i]) & (idx.val < off[i + 1])) == len(
            window_starts(sp.train_end, sp.val_end, L, H))


@FAST
@given(case=series_sets(), holes=st.lists(st.integers(0, 10_000), max_size=6))
def test_build_index_with_missing_values_keeps_only_complete_windows(case, holes):
    L, H, lens = case
    splits = [split_points(n, H, 0.1, 0.2) for n in lens]
    finite = [np.ones(n, dtype=bool) for n in lens]
    for h in holes:
        f = finite[h % len(lens)]
        f[h % len(f)] = False
    idx = build_index(lens, splits, L, H, finite)
    flat = np.concatenate(finite)
    for s in np.concatenate([idx.train, idx.val]):
        assert flat[s:s + L + H].all()


@FAST
@given(n=st.integers(50, 600), L=windows, H=horizons, stride=st.integers(1, 30), k=st.integers(1, 60))
def test_backtest_origins_lie_in_the_test_split(n, L, H, stride, k):
    sp = split_points(n, H, 0.1, 0.2)
    ts = origins(sp.val_end, n, L, H, stride, k)
    assert len(ts) <= k
    if len(ts):
        assert ts[-1] == n - H  # the last origin forecasts the series' last H points
        assert (ts >= sp.val_end).all() and (ts >= L).all() and (ts + H <= n).all()
        assert (np.diff(ts) == stride).all()


@FAST
@given(case=series_sets(), season=st.integers(1, 30), stride=st.integers(1, 10))
def test_evaluation_origins_have_history_for_model_and_seasonal_naive(case, season, stride):
    L, H, lens = case
    splits = [split_points(n, H, 0.1, 0.2) for n in lens]
    pairs = backtest_origins(lens, [s.val_end for s in splits], None, L, H, season, stride, 52)
    for i, t in pairs:
        assert splits[i].val_end <= t <= lens[i] - H
        assert t >= max(L, season)


@FAST
@given(case=series_sets(), C=st.integers(1, 4), data=st.data())
def test_gather_returns_the_slices_of_the_original_series(case, C, data):
    L, H, lens = case
    T = data.draw(st.integers(1, C))
    offsets = np.concatenate([[0], np.cumsum(lens)])
    every = np.concatenate([window_starts(0, n, L, H) + o for n, o in zip(lens, offsets)])  # all valid windows
    total = int(sum(lens))
    series = torch.arange(total * C, dtype=torch.float32).reshape(total, C)  # every value unique
    view = series.unfold(0, L + H, 1)  # (rows, C, L + H)
    pick = every[data.draw(st.lists(st.integers(0, len(every) - 1), min_size=1, max_size=8))]
    x, y, *_ = gather(view, torch.from_numpy(pick), Roles(L, view.shape[2] - L, T))
    assert x.shape == (len(pick), L, C) and y.shape == (len(pick), H, T)
    for b, s in enumerate(pick):
        assert torch.equal(x[b], series[s:s + L])
        assert torch.equal(y[b], series[s + L:s + L + H, :T])


@pytest.mark.parametrize("freq, season", [("h", 24), ("30min", 48), ("15min", 96), ("D", 7), ("W-SAT", 52), ("MS", 12)])
def test_frequency_names_and_seasons_survive_the_evenly_spaced_shortcut(freq, season):
    import pandas as pd

    from lstmcast.config import DataConfig
    from lstmcast.data.io import read_table
    from lstmcast.data.prepare import season_from_freq
    from lstmcast.data.validate import validate_frame

    df = pd.DataFrame({"t": pd.date_range("2020-01-04", periods=60, freq=freq), "y": np.arange(60.0)})
    series = validate_frame(read_table(df), DataConfig(time_col="t", target=["y"]))
    assert season_from_freq(series.freq) == season, series.freq
