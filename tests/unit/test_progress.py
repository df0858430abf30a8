"""EpochProgress: a rich bar on a terminal, a plain line per epoch otherwise (CI, log files), an ETA against the
epochs training is expected to run, and the stages after training."""

from __future__ import annotations

import io
import math
import re
from types import SimpleNamespace

from lstmcast.progress import EpochProgress, announce, expected_epochs, wanted
from lstmcast.training.loop import EpochRecord


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _rec(epoch: int, val: float, skipped: int = 0) -> EpochRecord:
    return EpochRecord(epoch=epoch, train_loss=1.0 / epoch, val_loss=val, lr=1e-3, grad_norm=1.0,
                       clipped_fraction=0.0, skipped_steps=skipped, steps=10, seconds=0.1, samples_per_s=320.0)


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


class FakeTrainer:
    """What expected_epochs reads of a Trainer: its budget, patience and where it stands."""

    def __init__(self, step: int, bad_epochs: int, min_steps: int = 300, patience: int = 10, max_epochs: int = 100,
                 per_epoch: int = 10, finished: bool = False):
        self.cfg = SimpleNamespace(min_steps=min_steps, patience=patience, max_epochs=max_epochs)
        self.step, self.bad_epochs, self.steps_per_epoch, self.finished = step, bad_epochs, per_epoch, finished


def test_plain_lines_print_every_epoch_when_not_a_terminal():
    out = io.StringIO()
    with EpochProgress(5, stream=out) as progress:
        assert not progress.tty
        for e, val in enumerate([0.9, 0.8, 0.85, 0.7, 0.75], start=1):
            progress(None, _rec(e, val, skipped=2 if e == 3 else 0))
    lines = _lines(out)
    assert [re.match(r"\[train\] epoch (\d)/5", line).group(1) for line in lines] == ["1", "2", "3", "4", "5"]
    assert "loss 1  val 0.9  lr 0.001  best" in lines[0] and "eta ~" in lines[0]
    assert "skipped 2" in lines[2]
    assert "val 0.75" in lines[4] and "best" not in lines[4] and lines[4].endswith("eta ~0s")


def test_a_cadence_prints_every_nth_epoch_the_first_and_the_last():
    out = io.StringIO()
    with EpochProgress(100, stream=out, every=3) as progress:
        for e in range(1, 8):  # early stopping ends it at epoch 7
            progress(None, _rec(e, 0.5))
    epochs = [int(re.match(r"\[train\] epoch (\d+)/100", line).group(1)) for line in _lines(out)]
    assert epochs == [1, 3, 6, 7]


def test_expected_epochs_follow_the_step_budget_and_patience_not_max_epochs():
    # 10 steps an epoch, 300-step budget: at epoch 5 (step 50) 25 more epochs are needed before stopping can
    assert expected_epochs(FakeTrainer(step=50, bad_epochs=0), 5, 100) == 30
    # budget spent, 3 epochs without improvement of a patience of 10: 7 more
    assert expected_epochs(FakeTrainer(step=400, bad_epochs=3), 40, 100) == 47
    assert expected_epochs(FakeTrainer(step=400, bad_epochs=0), 95, 100) == 100  # never past max_epochs
    assert expected_epochs(FakeTrainer(step=400, bad_epochs=0, finished=True), 41, 100) == 41
    assert expected_epochs(None, 3, 100) == 100


def test_eta_counts_the_expected_epochs_not_max_epochs():
    out = io.StringIO()
    with EpochProgress(100, stream=out) as progress:
        progress._t0 -= 10.0  # 10 s for the first epoch
        progress(FakeTrainer(step=400, bad_epochs=1, patience=10), _rec(1, 0.5))
    line = _lines(out)[0]
    assert "epoch 1/~10 (max 100)" in line
    eta = float(re.search(r"eta ~(\d+)s", line).group(1))
    assert 85 <= eta <= 95  # 9 epochs of 10 s, not 99


def test_resumed_run_counts_its_eta_from_the_epochs_run_here():
    out = io.StringIO()
    with EpochProgress(20, stream=out, start_epoch=9) as progress:
        progress._t0 -= 10.0  # 10 s into this process
        progress(None, _rec(10, 0.5))  # resumed after epoch 9: one epoch in 10 s, 10 to go
    eta = float(re.search(r"eta ~(\d+)s", out.getvalue()).group(1))
    assert 95 <= eta <= 105


def test_resumed_bar_starts_at_the_checkpoint_epoch():
    out = Terminal()
    with EpochProgress(100, stream=out, start_epoch=37):
        pass
    assert "epoch 37/100 (resumed)" in out.getvalue() and "epoch 0/100" not in out.getvalue()


def test_stages_after_training_are_shown_with_their_time():
    out = io.StringIO()
    with EpochProgress(3, stream=out) as progress:
        progress(None, _rec(1, 0.5))
        announce([object(), progress], "refit on every row")
        announce([progress], "backtest")
    lines = _lines(out)
    assert lines[1].startswith("[train] refit on every row ...")
    assert re.match(r"\[train\] refit on every row: done in \d+\.\ds", lines[2])
    assert lines[3].startswith("[train] backtest ...") and "done in" in lines[4]
    term = Terminal()
    with EpochProgress(3, stream=term) as progress:
        progress.stage("calibrating intervals")
    assert "calibrating intervals" in term.getvalue()


def test_fit_progress_is_silent_unless_asked_or_watched():
    assert wanted(True) and not wanted(False)
    assert not wanted(None, io.StringIO()) and wanted(None, Terminal())


def test_terminal_gets_a_rich_bar_not_plain_lines():
    out = Terminal()
    with EpochProgress(4, stream=out, label="train") as progress:
        assert progress.tty
        for e in range(1, 5):
            progress(None, _rec(e, math.nan))
            progress._bar.refresh()  # draw each epoch (the bar otherwise redraws 10 times a second)
    text = out.getvalue()
    assert "epoch 4/4" in text and "loss 0.25" in text and "val nan" in text
    assert "done: 4 epochs" in text  # the line left on screen says training ended
    assert "best" not in text  # no validation split: nothing to call best
    assert "[train] epoch" not in text  # the plain-line format is for non-terminals only


def test_python_fit_shows_every_epoch_and_the_stages_when_asked(capsys):
    from lstmcast import Forecaster
    from tests.conftest import seasonal_frame, small_config

    fc = Forecaster(small_config(train={"refit": True})).fit(seasonal_frame(300), progress=True)
    err = capsys.readouterr().err
    epochs = [int(m) for m in re.findall(r"^\[train\] epoch (\d+)/", err, flags=re.M)]
    assert epochs == [r["epoch"] for r in fc.history_]  # not one epoch line skipped
    assert "[train] refit on every row" in err and "done in" in err
