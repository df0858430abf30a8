"""One rank of a distributed test run, started by torchrun in place of ``-m lstmcast.cli``: lstmcast's CLI
with test-only faults injected into THIS process from the environment (lstmcast itself reads none of these).

- ``LSTMCAST_TEST_NAN_RANK=r`` and ``LSTMCAST_TEST_NAN_STEPS=a,b``: rank r's training loss (and so its
  gradients) is NaN at those steps (counted from 0, as ``Trainer.step`` before the step); the other ranks
  see finite losses of their own shards.
- ``LSTMCAST_TEST_KILL_RANK=r`` and ``LSTMCAST_TEST_KILL_STEP=k``: rank r sends itself SIGKILL when it is
  about to take step k, i.e. after every rank has finished step k - 1 (its all-reduce needs them all).
- ``LSTMCAST_TEST_OUT=dir``: every rank writes its final weights (``rank<r>.safetensors``) and its epoch
  history (``rank<r>.json``) there after ``Forecaster.fit``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def _patch() -> None:
    from safetensors.torch import save_file

    from lstmcast.forecaster import Forecaster
    from lstmcast.training.loop import Trainer

    env, rank = os.environ, os.environ.get("RANK", "0")
    if env.get("LSTMCAST_TEST_NAN_RANK") == rank:
        steps = {int(s) for s in env["LSTMCAST_TEST_NAN_STEPS"].split(",")}
        forward_loss = Trainer.forward_loss

        def nan_loss(self, b):
            loss = forward_loss(self, b)
            return loss * float("nan") if self.model.training and self.state.step in steps else loss

        Trainer.forward_loss = nan_loss
    if env.get("LSTMCAST_TEST_KILL_RANK") == rank:
        at, eager_step = int(env["LSTMCAST_TEST_KILL_STEP"]), Trainer.eager_step

        def kill_at(self, idx):
            if self.state.step == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return eager_step(self, idx)

        Trainer.eager_step = kill_at
    out = env.get("LSTMCAST_TEST_OUT")
    if out:
        fit = Forecaster.fit

        def fit_and_record(self, *args, **kwargs):
            fc = fit(self, *args, **kwargs)
            state = {k: v.detach().cpu().contiguous() for k, v in fc.model_.state_dict().items()}
            save_file(state, str(Path(out) / f"rank{rank}.safetensors"))
            (Path(out) / f"rank{rank}.json").write_text(json.dumps(fc.history_))
            return fc

        Forecaster.fit = fit_and_record


if __name__ == "__main__":
    _patch()
    from lstmcast.cli import main

    sys.argv = ["lstmcast", *sys.argv[1:]]
    main()
