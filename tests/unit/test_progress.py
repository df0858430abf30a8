"""EpochProgress: a rich bar on a terminal, plain periodic lines otherwise (CI, log files)."""

from __future__ import annotations

import io
import math
import re

from lstmcast.progress import EpochProgress
from lstmcast.training.loop import EpochRecord


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _rec(epoch: int, val: float, skipped: int = 0) -> EpochRecord:
    return EpochRecord(epoch=epoch, train_loss=1.0 / epoch, val_loss=val, lr=1e-3, grad_norm=1.0,
                       clipped_fraction=0.0, skipped_steps=skipped, steps=10, seconds=0.1, samples_per_s=320.0)


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_plain_lines_first_last_and_periodic_when_not_a_terminal():
    out = io.StringIO()
    with EpochProgress(5, stream=out, every_s=3600) as progress:
        assert not progress.tty
        for e, val in enumerate([0.9, 0.8, 0.85, 0.7, 0.75], start=1):
            progress(None, _rec(e, val, skipped=2 if e == 3 else 0))
    lines = _lines(out)
    assert [re.match(r"\[train\] epoch (\d)/5", line).group(1) for line in lines] == ["1", "5"]
    assert "loss 1  val 0.9  lr 0.001  best" in lines[0] and "eta <=" in lines[0]
    assert "val 0.75" in lines[1] and "best" not in lines[1] and lines[1].endswith("eta <= 0s")
    out = io.StringIO()
    with EpochProgress(5, stream=out, every_s=0.0) as progress:
        for e in range(1, 4):
            progress(None, _rec(e, 1.0 / e, skipped=2 if e == 3 else 0))
    lines = _lines(out)
    assert len(lines) == 3 and "skipped 2" in lines[2]


def test_early_stopping_still_prints_the_last_epoch():
    out = io.StringIO()
    with EpochProgress(100, stream=out, every_s=3600) as progress:
        for e in range(1, 8):
            progress(None, _rec(e, 0.5))
    lines = _lines(out)
    assert len(lines) == 2 and lines[0].startswith("[train] epoch 1/100") and lines[1].startswith("[train] epoch 7/100")


def test_resumed_run_counts_its_eta_from_the_epochs_run_here():
    out = io.StringIO()
    with EpochProgress(20, stream=out, every_s=0.0) as progress:
        progress._t0 -= 10.0  # 10 s into this process
        progress(None, _rec(10, 0.5))  # resumed after epoch 9: one epoch in 10 s, 10 to go
    eta = float(re.search(r"eta <= (\d+)s", out.getvalue()).group(1))
    assert 95 <= eta <= 105


def test_terminal_gets_a_rich_bar_not_plain_lines():
    out = Terminal()
    with EpochProgress(4, stream=out, label="train") as progress:
        assert progress.tty
        for e in range(1, 5):
            progress(None, _rec(e, math.nan))
    text = out.getvalue()
    assert "epoch 4/4" in text and "loss 0.25" in text and "val nan" in text
    assert "best" not in text  # no validation split: nothing to call best
    assert "[train] epoch" not in text  # the plain-line format is for non-terminals only
