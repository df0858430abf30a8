"""Streaming batches from host memory: the placement decision, the batches equal the resident gather,
staging buffers alternate without corrupting earlier batches, and a Trainer trains identically."""

from __future__ import annotations

import copy

import pytest
import torch

from lstmcast.config import TrainConfig
from lstmcast.data.windows import Roles, gather
from lstmcast.model.network import LSTMForecaster
from lstmcast.training import streaming as streaming
from lstmcast.training.accel import resolve
from lstmcast.training.loop import Trainer
from lstmcast.training.records import TrainData


def test_stream_only_when_the_series_would_crowd_the_device():
    gib = 2**30
    assert streaming.should_stream(10 * gib, 16 * gib)  # over half the free memory
    assert not streaming.should_stream(2 * gib, 16 * gib)
    assert streaming.should_stream(5 * gib, 16 * gib, fraction=0.25)
    cpu = torch.device("cpu")
    s = torch.zeros(10, 2)
    assert streaming.place_series(s, cpu).device == cpu


def _windows():
    torch.manual_seed(0)
    series = torch.randn(200, 3)  # (N, C=3): 2 targets + 1 feature
    return series.unfold(0, 12 + 4, 1)  # L=12, H=4


def test_host_batches_equal_the_resident_gather_and_survive_later_batches():
    w = _windows()
    batcher = streaming.HostBatcher(w, torch.device("cpu"), Roles(12, w.shape[2] - 12, 2))
    idxs = [torch.randint(0, len(w), (n,)) for n in (8, 8, 5, 8)]
    out = [batcher(i) for i in idxs]
    for i, (x, y, *_) in zip(idxs, out):  # earlier batches are intact after both buffers were reused
        ex, ey, *_ = gather(w, i, Roles(12, w.shape[2] - 12, 2))
        assert x.shape == (len(i), 12, 3) and y.shape == (len(i), 4, 2)
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert batcher.copies == 4 and batcher.turn == 0
    assert [b.shape[0] for b in batcher.slots] == [8, 8]  # grown once, then reused


def test_make_gather_streams_only_for_windows_off_the_device():
    w = _windows()
    resident = streaming.make_gather(w, torch.device("cpu"), Roles(12, w.shape[2] - 12, 2))
    assert not isinstance(resident, streaming.HostBatcher)
    gather = streaming.make_gather(w, torch.device("meta"), Roles(12, w.shape[2] - 12, 2))
    assert isinstance(gather, streaming.HostBatcher)


def test_a_trainer_fed_by_the_host_batcher_trains_like_the_resident_one():
    torch.manual_seed(0)
    series = torch.randn(300, 1).cumsum(0) / 10
    L, H = 10, 2
    starts = torch.arange(0, 300 - L - H + 1)
    model = LSTMForecaster(1, 1, H, hidden_size=8, num_layers=1, window=L)
    cfg = TrainConfig(batch_size=16, max_epochs=2, seed=0, precision="fp32")
    runs = []
    for stream in (False, True):
        t = Trainer(copy.deepcopy(model), cfg, resolve("cpu", "fp32", 1),
                    TrainData.of(series, starts[:250], starts[250:], Roles(L, H, 1)))
        if stream:
            t.gather_batch = streaming.HostBatcher(t.data.windows, torch.device("cpu"), t.data.roles)
        runs.append((t, [(r.train_loss, r.val_loss) for r in t.fit().history]))
    assert runs[0][1] == runs[1][1]
    # every step and validation pass streamed: 2 epochs, a validation each, and the check at step 0
    assert runs[1][0].gather_batch.copies == 2 * runs[1][0].steps_per_epoch() + 3


@pytest.mark.gpu
def test_cuda_streaming_uses_pinned_staging_and_matches_the_resident_gather():
    w = _windows()
    dev = torch.device("cuda")
    batcher = streaming.HostBatcher(w, dev, Roles(12, w.shape[2] - 12, 2))
    idx = torch.randint(0, len(w), (64,))
    x, y, *_ = batcher(idx)
    assert batcher.slots[0].is_pinned() and x.device.type == "cuda"
    ex, ey, *_ = gather(w.to(dev), idx.to(dev), Roles(12, w.shape[2] - 12, 2))
    assert torch.equal(x, ex) and torch.equal(y, ey)
