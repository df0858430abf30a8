"""`lstmcast train --nproc N`: start N ranks of the same command through torch.distributed.run (torchrun).

The launcher picks the run folder before starting the ranks (they must agree on it), maps a failed rank
to lstmcast's exit codes and names it: a rank killed by a signal stops the others (torchrun's agent) and
the run continues with `lstmcast train --resume RUN --nproc N` (FAULTS T13). Ctrl-C (SIGINT) or SIGTERM reaches
the launcher alone (torchrun starts the ranks in their own sessions); torchrun's agent passes it on to every
rank, which stop at the same step, rank 0 checkpointing, and the launcher exits 130 as the ranks do.
"""

from __future__ import annotations

import logging
import signal
import sys

from lstmcast.workflow import default_run_dir

_ELASTIC = ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run")


class _HeldBack(logging.Filter):
    """Holds back torch elastic's launcher log lines (W "Sending process ... closing signal SIGTERM", E "failed
    (exitcode: -9) local_rank: 1 ..."): lstmcast names the lost rank itself, so they are dropped when it does and
    replayed when a failure is not one it explains. A filter on the handlers, not the loggers: elastic's loggers
    are created lazily and each sets its own level."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[int, logging.LogRecord] = {}
        self.handlers: list[logging.Handler] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(_ELASTIC):
            self.records[id(record)] = record
            return False
        return True

    def __enter__(self) -> _HeldBack:
        loggers = [logging.getLogger(), logging.getLogger("torch"), logging.getLogger("torch.distributed")]
        self.handlers = list({id(h): h for lg in loggers for h in lg.handlers}.values())
        if logging.lastResort is not None:
            self.handlers.append(logging.lastResort)
        for handler in self.handlers:
            handler.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for handler in self.handlers:
            handler.removeFilter(self)

    def replay(self) -> None:
        """Hand the held lines on as they would have gone (a failure lstmcast does not explain)."""
        self.__exit__()
        for record in self.records.values():
            logging.getLogger(record.name).handle(record)
        self.records.clear()


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, argv: list[str], add_run: bool) -> int:
    """Run ``lstmcast <argv>`` on ``nproc`` local ranks; returns the exit code for the CLI."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = _without_nproc(argv)
    if add_run:
        args += ["--run", str(default_run_dir())]
    ns = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc), "--module", "lstmcast.cli"])
    ns.training_script_args = args  # set here: torchrun's parser would read `--run` as its own `--run-path`
    with _HeldBack() as held:
        try:
            run(ns)
        except ChildFailedError as exc:
            return _report(exc, held)
        except SignalException as exc:  # the agent has passed the signal on to the ranks and waited for them
            print(f"{signal.Signals(exc.sigval).name}: the {nproc} ranks were stopped; continue from rank 0's "
                  f"checkpoint with `lstmcast train --resume RUN --nproc {nproc}`", file=sys.stderr)
            return 130
        except BaseException:
            held.replay()
            raise
    return 0


def _report(exc: BaseException, held: _HeldBack | None = None) -> int:
    failures = getattr(exc, "failures", {})
    rank, first = min(failures.items(), key=lambda kv: kv[1].timestamp)
    code = first.exitcode
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        print(f"error: rank {rank} was killed by {name}; the other ranks were stopped. Continue from the last "
              "checkpoint with `lstmcast train --resume RUN --nproc N`", file=sys.stderr)
        return 130
    codes = {f.exitcode for f in failures.values()}
    for known in (130, 5, 4, 3, 2):  # the most telling exit code any rank gave
        if known in codes:
            return known
    if held is not None:  # not a failure lstmcast explains: torch's own account may help
        held.replay()
    print(f"error: rank {rank} failed with exit code {code} (see its messages above)", file=sys.stderr)
    return code if 0 < code < 256 else 1
