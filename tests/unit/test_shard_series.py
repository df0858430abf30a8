"""data.shard_series (issue 14): the series assignment, one rank's read of a Parquet dataset (no processes:
the reader takes rank and world), the refusals, and the linear skip fitted from sums over the ranks choosing
exactly what one process chooses."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lstmcast.config import validate_config
from lstmcast.data.shard import assign, load_shard, read_shard, refuse_unshardable
from lstmcast.errors import ConfigError
from lstmcast.training.skip_init import fit_skip
from lstmcast.training.world import Sharded, Solo


def _dataset(folder: Path, ids: list, files: int = 3, n: int = 5) -> Path:
    folder.mkdir()
    frames = [pd.DataFrame({"sid": sid, "time": pd.date_range("2024-01-01", periods=n, freq="D"),
                            "y": np.arange(n, dtype=float) + 10 * k}) for k, sid in enumerate(ids)]
    for f in range(files):  # series spread over the files in another order than sorted
        pd.concat(frames[f::files]).to_parquet(folder / f"part-{f}.parquet", index=False)
    return folder


@pytest.mark.parametrize("n,world", [(8, 2), (7, 3), (3, 3), (100, 7)])
def test_assignment_covers_every_series_once_and_balances_within_one(n, world):
    shares = [assign(n, r, world) for r in range(world)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(n))
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1


def test_each_rank_reads_only_its_round_robin_series_with_their_dataset_rows(tmp_path):
    ids = [f"s{i}" for i in range(8)]
    path = _dataset(tmp_path / "d", ids[::-1])
    whole = pd.concat([pd.read_parquet(p) for p in sorted(path.glob("*.parquet"))], ignore_index=True)
    seen = []
    for rank in range(2):
        frame, all_ids = read_shard(path, "sid", rank, 2)
        assert all_ids == ids  # sorted, the same on every rank
        assert sorted(frame["sid"].unique()) == ids[rank::2]
        assert len(frame) == 4 * 5  # only its 4 series' rows were read
        # __row__ names the row's position in the whole dataset (error messages point at it)
        assert (whole.loc[frame["__row__"], "sid"].to_numpy() == frame["sid"].to_numpy()).all()
        seen += frame["sid"].unique().tolist()
    assert sorted(seen) == ids


def test_a_dataset_partitioned_by_the_id_is_read_by_partition(tmp_path):
    import pyarrow as pa
    import pyarrow.dataset as ds

    table = pd.concat([pd.DataFrame({"sid": f"s{i}", "time": pd.date_range("2024-01-01", periods=4, freq="D"),
                                     "y": float(i)}) for i in range(5)])
    ds.write_dataset(pa.Table.from_pandas(table, preserve_index=False), tmp_path / "hive", format="parquet",
                     partitioning=["sid"], partitioning_flavor="hive")  # hive/sid=s0/part-0.parquet, ...
    frame, all_ids = read_shard(tmp_path / "hive", "sid", 0, 2)
    assert all_ids == [f"s{i}" for i in range(5)]
    assert sorted(frame["sid"].astype(str).unique()) == ["s0", "s2", "s4"] and len(frame) == 12
    assert frame.groupby(frame["sid"].astype(str))["y"].first().tolist() == [0.0, 2.0, 4.0]


def test_integer_ids_are_assigned_in_numeric_order(tmp_path):
    path = _dataset(tmp_path / "d", [10, 2, 1, 33], files=2)
    frame, all_ids = read_shard(path, "sid", 1, 2)
    assert all_ids == ["1", "2", "10", "33"]  # as validate's factorize(sort=True) orders them
    assert sorted(frame["sid"].unique().tolist()) == [2, 33]


def _cfg(path, **data) -> object:
    return validate_config({"data": {"path": str(path), "time_col": "time", "target": "y", "id_col": "sid",
                                     "horizon": 2, "window": 2, "shard_series": True, **data}})


def test_a_rank_validates_its_own_series_into_a_series_set(tmp_path):
    path = _dataset(tmp_path / "d", [f"s{i}" for i in range(5)], n=30)
    series, ids = load_shard(None, _cfg(path), 1, 2)
    assert series.ids == ["s1", "s3"] and len(ids) == 5
    assert [len(v) for v in series.values] == [30, 30]


def test_fewer_series_than_ranks_is_refused_naming_the_counts(tmp_path):
    path = _dataset(tmp_path / "d", ["a", "b"], files=1)
    for rank in range(3):  # every rank refuses, not only the one left without series
        with pytest.raises(ConfigError, match=r"holds 2 series for 3 ranks, .* rank 2 would get none; use at most 2"):
            read_shard(path, "sid", rank, 3)


def test_csv_dataframe_one_process_and_unshared_inputs_are_refused(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("sid,time,y\na,2024-01-01,1\n")
    with pytest.raises(ConfigError, match="reads a Parquet file or a folder of Parquet files, got '.*t.csv'"):
        refuse_unshardable(str(csv), _cfg(csv), 2)
    with pytest.raises(ConfigError, match="got DataFrame: convert the table to Parquet"):
        refuse_unshardable(pd.DataFrame(), _cfg(csv), 2)
    path = _dataset(tmp_path / "d", ["a", "b"], files=1)
    with pytest.raises(ConfigError, match="needs several ranks .* but this is one process"):
        refuse_unshardable(str(path), _cfg(path), 1)
    with pytest.raises(ConfigError, match="needs a long table with data.id_col"):
        refuse_unshardable(str(path), _cfg(path, id_col=None), 2)
    cfg = validate_config({**_cfg(path).to_dict(), "model": {"id_embedding": True}})
    with pytest.raises(ConfigError, match="does not support model.id_embedding"):
        refuse_unshardable(str(path), cfg, 2)


def test_one_process_fit_with_shard_series_is_refused(tmp_path):
    from lstmcast import Forecaster

    path = _dataset(tmp_path / "d", ["a", "b"], files=1)
    with pytest.raises(ConfigError, match="this is one process: start it with --nproc N"):
        Forecaster(_cfg(path)).fit()


def test_local_batches_add_up_to_the_global_batch_and_weigh_their_share():
    shares = [Sharded(rank=r, world=3, local_world=3).local_batch(32) for r in range(3)]
    assert sum(shares) == 32 and max(shares) - min(shares) <= 1
    d = Sharded(rank=0, world=3, local_world=3)
    idx, weight = d.shard(torch.arange(shares[0]), 32)
    assert len(idx) == shares[0] and weight == pytest.approx(shares[0] / 32)


class _Summing:
    """A two-rank all-reduce between threads: each call blocks until both ranks gave theirs."""

    def __init__(self) -> None:
        self.barrier, self.slots = threading.Barrier(2), [None, None]

    def for_rank(self, rank: int):
        def reduce(x: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = x.clone()
            self.barrier.wait()
            out = self.slots[0] + self.slots[1]
            self.barrier.wait()  # both read before the next call overwrites a slot
            return out
        return reduce


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["seasonal", "random walk"])  # a fitted map wins; the naive prior wins
def test_the_skip_fitted_from_sums_over_two_ranks_is_the_one_process_fit(seed, kind):
    g = torch.Generator().manual_seed(seed)
    L, H = 12, 4
    t = torch.arange(400, dtype=torch.float32)
    series = [torch.sin(t / 3 + k) + 0.3 * torch.randn(400, generator=g) if kind == "seasonal" else
              torch.randn(400, generator=g).cumsum(0) for k in range(4)]
    windows = torch.stack([s.unfold(0, L + H, 1) for s in series])[:, :, None, :]  # (S, n, T=1, L + H)
    n = windows.shape[1]
    tr_w, va_w = windows[:, :300], windows[:, 300:n]
    one = fit_skip(torch.cat([tr_w.reshape(-1, 1, L + H), va_w.reshape(-1, 1, L + H)]),
                   torch.arange(4 * 300), torch.arange(4 * 300, 4 * n), L, H, 1, 6)
    summing, out = _Summing(), [None, None]

    def rank(r: int) -> None:  # rank r holds series r and r + 2
        mine = torch.cat([tr_w[r::2].reshape(-1, 1, L + H), va_w[r::2].reshape(-1, 1, L + H)])
        ntr = 2 * 300
        out[r] = fit_skip(mine, torch.arange(ntr), torch.arange(ntr, len(mine)), L, H, 1, 6,
                          reduce=summing.for_rank(r), shares=2)
    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert (one.lam == float("inf")) == (kind == "random walk")  # both branches of the choice are exercised
    for fit in out:
        assert (fit.prior, fit.lam) == (one.prior, one.lam)
        assert fit.val_loss == pytest.approx(one.val_loss, rel=1e-9)
        torch.testing.assert_close(fit.weight, one.weight, rtol=1e-5, atol=1e-6)


class _Views:
    """Stands in for the process group: ``gather`` returns this rank's view and the other ranks' given ones."""

    def __init__(self, others: list[dict]) -> None:
        self.others, self.rank, self.world = others, 0, 1 + len(others)

    def gather(self, mine: dict) -> list[dict]:
        return [mine, *({**mine, **o} for o in self.others)]


def _prepared(tmp_path):
    from lstmcast.data.prepare import prepare

    path = _dataset(tmp_path / "d", ["a", "b", "c"], files=1, n=120)
    cfg = _cfg(path, window=None, season=7)
    series, _ = load_shard(None, cfg, 0, 2)
    return prepare(series, cfg.data), cfg


def test_ranks_with_different_auto_windows_all_take_the_smallest(tmp_path):
    prep, cfg = _prepared(tmp_path)
    assert prep.window == 14  # auto: 2 seasons
    again = Sharded.agree(_Views([{"window": 9}]), prep, cfg, "fp32")
    assert again.window == 9 and len(again.index.train) > len(prep.index.train)


def test_ranks_whose_series_differ_in_frequency_are_refused_naming_the_setting(tmp_path):
    prep, cfg = _prepared(tmp_path)
    assert Sharded.agree(_Views([{}]), prep, cfg, "fp32") is prep  # all alike: nothing to change
    with pytest.raises(ConfigError, match=r"differ in freq \(\['D', 'h'\], by rank\): set data.freq"):
        Sharded.agree(_Views([{"freq": "h"}]), prep, cfg, "fp32")


def test_one_ranks_data_error_is_raised_on_every_rank_with_its_message_and_kind():
    from lstmcast.errors import DataError

    class Dist:
        sharded, rank, world = True, 0, 2

        @staticmethod
        def gather(mine):
            return [mine, ("DataError", "series 'b' has a duplicated timestamp at row 7: remove it")]
    assert Solo().together(lambda x: x + 1, 1) == 2  # alone: just the call
    with pytest.raises(DataError, match=r"^rank 1 of 2: series 'b' has a duplicated timestamp at row 7"):
        Sharded.together(Dist(), lambda: "rank 0's series are fine")
