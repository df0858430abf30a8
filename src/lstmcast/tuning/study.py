"""`lstmcast tune`: an Optuna study over the guide's search space, with pruning and many workers.

One worker = one process running :class:`Tuner`. It reads and validates the data ONCE and reuses it
for every trial (a trial's window changes only the window index). Each trial trains through
``Forecaster.fit(series, callbacks=[PruningReporter])``: the callback reports the validation loss
every epoch and raises ``optuna.TrialPruned`` when the pruner says so. A trial that diverges
(DivergedError) or runs out of memory fails alone (FAULTS.md U3, T6); a worker killed mid-trial
leaves a RUNNING trial that the next worker marks failed and redoes (U1); workers sharing a study
claim trials under a lock, so the study holds exactly ``trials`` trials (U2).

>>> from lstmcast.config import load_config
>>> cfg = load_config(None, ["data.path=co2.csv", "tune.trials=10"])  # doctest: +SKIP
>>> with Tuner(cfg, TuneOptions(run_dir=Path("runs/tune"))) as tuner:  # doctest: +SKIP
...     summary = tuner.run()
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast.data.load import load_series
from lstmcast.errors import ConfigError, DataError, DivergedError, InterruptedRun
from lstmcast.forecaster import Forecaster
from lstmcast.progress import trials_eta
from lstmcast.run.lock import RunLock
from lstmcast.run.manifest import file_sha256
from lstmcast.tuning import results as tuning_report
from lstmcast.tuning.space import SearchSpace, apply_params, space_for, suggest
from lstmcast.tuning.storage import (
    HOST,
    Heartbeat,
    WorkerSlot,
    claim_lock,
    default_storage,
    normalize_url,
    open_storage,
    quiet_optuna_warnings,
    redact,
    refuse_lost_study,
    sqlite_path,
)

if TYPE_CHECKING:
    import optuna

    from lstmcast.config import ForecastConfig
    from lstmcast.data.validate import SeriesSet
    from lstmcast.forecaster import Forecaster
    from lstmcast.training.loop import FitResult

log = logging.getLogger(__name__)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}
POLL_S = 1.0
PROGRESS_EVERY_S = 5.0  # trials.csv and best.yaml are rewritten at most this often while tuning


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"30m"``, ``"2h"`` or ``"1h30m"``."""
    s = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(s)
    if not s or "".join(n + u for n, u in parts) != s or (len(parts) > 1 and any(u == "" for _, u in parts)):
        raise ConfigError(f"--timeout {text!r}: expected a duration such as 90s, 30m, 2h or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:  # 0 read as "no limit" ran every trial; as a limit it would start none
        raise ConfigError(f"--timeout {text!r} is zero: no trial could start; give a positive duration such as 90s, "
                          "30m or 2h, or leave --timeout out for no limit")
    return seconds


@dataclass
class TuneOptions:
    run_dir: Path
    storage: str | None = None  # None: sqlite file DIR/study.db
    study_name: str = "lstmcast"
    timeout_s: float | None = None
    threads: int | None = None  # per trial; None: cores // local workers
    workers_per_machine: int | None = None  # None: the live workers counted in DIR/workers


@dataclass
class TrialOutcome:
    number: int
    state: str  # complete | pruned | failed (<why>)
    value: float | None
    params: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    done: int = 0  # trials the study holds now, every worker's (what counts toward tune.trials)
    total: int = 0  # tune.trials
    eta_s: float | None = None  # this worker's estimate of the time left (None: unknown)


class PruningReporter:
    """Trainer callback: report each epoch's validation loss and raise TrialPruned when told to."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.epochs = 0

    def __call__(self, trainer: Any, record: Any) -> None:
        import optuna

        self.epochs = record.epoch
        value = record.val_loss if math.isfinite(record.val_loss) else record.train_loss
        if not math.isfinite(value):
            return  # non-finite epochs are the trainer's business (DivergedError)
        self.trial.report(value, record.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {record.epoch} (validation loss {value:.4g})")


def fit_trial(cfg: ForecastConfig, series: SeriesSet, callbacks: list[Callable[..., None]]) -> Forecaster:
    """Train one trial's model on the already validated series (a seam for fault-injection tests)."""
    return Forecaster(cfg).fit(series, callbacks=callbacks, progress=False)  # the study prints a line a trial


def objective_value(fc: Forecaster, objective: str) -> float:
    if objective == "mase":
        return float(fc.backtest()["model"]["MASE"])
    return float(fit_result(fc).best_val_loss)


def fit_result(fc: Forecaster) -> FitResult:
    """The training's result (best epoch and loss, stop reason) of a Forecaster fit_trial trained."""
    return fc.trained.result


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int, slot: int, shared: bool) -> optuna.samplers.BaseSampler:
    """TPE over the conditional space; each worker gets its own seed so workers do not draw alike."""
    import optuna

    mixed = seed + 1009 * slot + (zlib.crc32(HOST.encode()) if shared else 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=mixed % 2**32, multivariate=True, group=True, constant_liar=True)


def _failure(exc: BaseException) -> str | None:
    import torch

    if isinstance(exc, DivergedError):
        return "diverged"
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "out of memory"
    if isinstance(exc, (DataError, ConfigError)):
        return "invalid"
    return None


class Tuner:
    """One tuning worker: ``open()`` reads the data and joins (or starts) the study, ``run()`` works
    until the study holds ``tune.trials`` trials (or the timeout passes), then writes the results."""

    def __init__(self, cfg: ForecastConfig, options: TuneOptions):
        if cfg.data.path is not None:
            cfg = cfg.model_copy(deep=True)
            cfg.data.path = os.path.abspath(cfg.data.path)  # best.yaml must work from any folder
        self.cfg, self.opts = cfg, options
        self.run_dir = Path(options.run_dir)
        self.url = normalize_url(options.storage) if options.storage else default_storage(self.run_dir)
        self.space: SearchSpace | None = None
        self.slot: WorkerSlot | None = None
        self._lock: RunLock | None = None

    def __enter__(self) -> Tuner:
        try:
            self.open()
        except BaseException:
            self.close()  # the worker slot and the folder lock go with a refused open
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> SearchSpace:
        """Check device and data, resolve the space, join the study. Call before ``run``."""
        import optuna

        from lstmcast.training.accel import resolve

        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"--run {self.run_dir} is a file, not a folder: choose another path")
        train = self.cfg.train  # device/precision problems surface before any data is read (C3)
        resolve(train.device, train.precision, self.opts.threads or train.threads, train.accel)
        self.series = load_series(None, self.cfg)  # once per worker, reused by every trial
        self.space = space_for(self.cfg, self.series)
        # T9: workers of one study share the folder; a `train` into it (or it into a run) is refused
        self._lock = RunLock(self.run_dir, shared=True, what="tuning").acquire()
        self.slot = WorkerSlot(self.run_dir)
        t = self.cfg.tune
        with claim_lock(self.url, self.opts.study_name):  # workers starting together create the tables once
            refuse_lost_study(sqlite_path(self.url), self.run_dir)
            self.storage = open_storage(self.url, t.heartbeat_s)
            self.study = optuna.create_study(
                storage=self.storage, sampler=make_sampler(t.seed, self.slot.slot, sqlite_path(self.url) is None),
                pruner=make_pruner(t.pruner, t.max_epochs), study_name=self.opts.study_name, direction="minimize",
                load_if_exists=True)
            self._check_same_study()
        return self.space

    def close(self) -> None:
        if self.slot is not None:
            self.slot.close()
            self.slot = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _fingerprint(self) -> dict[str, Any]:
        """What every worker of one study must agree on: the data's content (sha256), not its path (machines
        differ; the path is kept as ``data.file`` to name it in a refusal), and the settings trials depend on."""
        c = self.cfg.to_dict()
        fp = {f"data.{k}": v for k, v in c["data"].items() if k not in ("path", "delimiter")}
        fp.update({"data.sha256": file_sha256(self.cfg.data.path), "data.file": self.cfg.data.path})
        fp.update({f"space.{k}": v for k, v in self.space.as_dict().items()})
        fp.update({f"tune.{k}": c["tune"][k] for k in ("objective", "max_epochs")})
        fp.update({f"model.{k}": c["model"][k] for k in ("bias", "window_norm")})
        fp.update({f"train.{k}": c["train"][k] for k in ("loss", "seed", "clip_norm", "weight_decay", "patience")})
        return fp

    def _check_same_study(self) -> None:
        """Refuse to join a study started on other data or settings (U5): its trials would mix with ours."""
        fp = self._fingerprint()
        old = self.study.user_attrs.get("lstmcast_fingerprint")
        if old is None:
            self.study.set_user_attr("lstmcast_fingerprint", fp)
            return
        if "data.sha256" not in old:  # a study from before the data was fingerprinted: nothing to compare
            log.warning("study %r records no data hash (older lstmcast): make sure it was tuned on %s",
                        self.opts.study_name, fp["data.file"])
            old = {**old, "data.sha256": fp["data.sha256"], "data.file": fp["data.file"]}
        diff = sorted((k for k in set(old) | set(fp) if k != "data.file" and old.get(k) != fp.get(k)),
                      key=lambda k: (k != "data.sha256", k))
        if diff:
            shown = "; ".join(_difference(k, old, fp) for k in diff[:6])
            raise ConfigError(f"study {self.opts.study_name!r} in {redact(self.url)} was started with another "
                              f"configuration ({shown}): tune with the same config and data, or start a new "
                              "study with another --run or --study")

    # -- the worker loop ----------------------------------------------------------------------
    def threads(self) -> int:
        """Torch threads per trial: --threads, else train.threads, else cores // local live workers."""
        from lstmcast.training.accel import available_cores, check_threads

        if self.opts.threads or self.cfg.train.threads:
            key = "--threads" if self.opts.threads else "train.threads"
            return check_threads(int(self.opts.threads or self.cfg.train.threads), key)
        workers = self.opts.workers_per_machine or self.slot.live_workers()
        return max(1, available_cores() // workers)

    def fail_stale(self) -> list[int]:
        """Fail RUNNING trials whose worker is gone: at once on this machine, after the heartbeat grace elsewhere."""
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        with quiet_optuna_warnings():
            fail_stale_trials(self.study)
        failed = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get("worker")
            if owner and owner != self.slot.worker_id and self.slot.owner_alive(owner) is False:
                self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                log.warning("trial %d was left running by a stopped worker (%s): marked failed; it will be redone",
                            t.number, owner)
                failed.append(t.number)
        return failed

    def _claim(self, n: int) -> optuna.Trial | None:
        with claim_lock(self.url, self.opts.study_name):
            trials = self.study.get_trials(deepcopy=False)
            if sum(tuning_report.counts_as_trial(t) for t in trials) >= n:
                return None
            with quiet_optuna_warnings():
                trial = self.study.ask()
            trial.set_user_attr("worker", self.slot.worker_id)
            self.storage.record_heartbeat(trial._trial_id)
            return trial

    def _others_running(self) -> bool:
        from optuna.trial import TrialState

        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def run(self, on_trial: Callable[[TrialOutcome], None] | None = None) -> dict[str, Any]:
        """Run trials until the study holds ``tune.trials`` of them; return the summary of the results."""
        if self.space is None:
            self.open()
        t = self.cfg.tune
        start = time.monotonic()
        deadline = start + self.opts.timeout_s if self.opts.timeout_s is not None else None
        last_write = -math.inf
        ran, expired = 0, False
        while True:
            expired = deadline is not None and time.monotonic() >= deadline
            self.fail_stale()
            trial = None if expired else self._claim(t.trials)
            if trial is None:
                if expired or not self._others_running():
                    break
                time.sleep(POLL_S)  # others still run trials: one may fail and need redoing
                continue
            outcome = self._run_trial(trial)
            ran += 1
            if time.monotonic() - last_write >= PROGRESS_EVERY_S:  # short pruned trials: do not rewrite each time
                tuning_report.write_progress(self.run_dir, self.cfg, self.study, t.objective)
                last_write = time.monotonic()
            if on_trial is not None:
                outcome.done, outcome.total = self.trials_done(), t.trials
                outcome.eta_s = trials_eta(time.monotonic() - start, ran, t.trials - outcome.done, deadline)
                on_trial(outcome)
        summary = tuning_report.write_results(self.run_dir, self.cfg, self.study, t.objective, self.space.as_dict())
        summary["stopped_by"] = "timeout" if expired and summary["trials"] < t.trials else "trials"
        return summary

    def trials_done(self) -> int:
        """The trials the study holds that count toward tune.trials (every worker's)."""
        return sum(tuning_report.counts_as_trial(tr) for tr in self.study.get_trials(deepcopy=False))

    # -- one trial ----------------------------------------------------------------------------
    def _run_trial(self, trial: optuna.Trial) -> TrialOutcome:
        import optuna

        t = self.cfg.tune
        params = suggest(trial, self.space)
        threads = self.threads()
        reporter = PruningReporter(trial)
        attrs: dict[str, Any] = {"threads": threads}
        t0 = time.perf_counter()
        try:
            cfg = apply_params(self.cfg, params, max_epochs=t.max_epochs, threads=threads)
            with Heartbeat(self.storage, trial, t.heartbeat_s):
                fc = fit_trial(cfg, self.series, [reporter])
                result = fit_result(fc)
                if result.stop_reason.startswith("interrupted"):  # SIGINT/SIGTERM: weights are partial
                    raise InterruptedRun(f"trial {trial.number} {result.stop_reason}: rerun the same "
                                         "command to continue the study (this trial will be redone)")
                value = objective_value(fc, t.objective)
            attrs.update(best_epoch=result.best_epoch, best_val_loss=result.best_val_loss,
                         n_parameters=fc.meta_.n_parameters)
            if not math.isfinite(value):
                raise DivergedError(f"the trial ended with a non-finite {t.objective} ({value})")
        except optuna.TrialPruned:
            return self._finish(trial, "pruned", None, params, attrs, reporter, t0)
        except (KeyboardInterrupt, InterruptedRun):
            self._finish(trial, "stopped", None, params, attrs, reporter, t0)
            raise
        except Exception as exc:
            why = _failure(exc)
            attrs.update(failure=why or "error", error=str(exc)[:500])
            log.warning("trial %d failed (%s): %s", trial.number, attrs["failure"], exc)
            outcome = self._finish(trial, "failed", None, params, attrs, reporter, t0)
            if why is None:
                raise  # a bug or an unexpected environment: the trial is recorded, the worker stops
            return outcome
        return self._finish(trial, "complete", value, params, attrs, reporter, t0)

    def _finish(self, trial: optuna.Trial, state: str, value: float | None, params: dict[str, Any],
                attrs: dict[str, Any], reporter: PruningReporter, t0: float) -> TrialOutcome:
        from optuna.trial import TrialState

        attrs.update(epochs=reporter.epochs, seconds=round(time.perf_counter() - t0, 3))
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
        self.study.tell(trial, value if state == "complete" else None, state=states.get(state, TrialState.FAIL))
        label = f"failed ({attrs['failure']})" if state == "failed" else state
        return TrialOutcome(trial.number, label, value, params, attrs)


def _difference(key: str, old: dict[str, Any], now: dict[str, Any]) -> str:
    if key == "data.sha256":
        def side(fp: dict[str, Any]) -> str:
            return f"{fp.get('data.file')} (sha256 {str(fp.get('data.sha256'))[:12]}...)"
        return f"data: {side(old)} in the study, {side(now)} now"
    return f"{key}: {old.get(key)!r} in the study, {now.get(key)!r} now"


def route_optuna_logs() -> None:
    """Send optuna's log records through logging (shown with -v) instead of its own stderr handler."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(logging.getLogger().getEffectiveLevel())


def no_best_trial_error(summary: dict[str, Any]) -> Exception:
    """The error to raise when a study has no complete trial, saying what happened and what to do."""
    states = ", ".join(f"{n} {s}" for s, n in summary["states"].items()) or "no trials"
    msg = f"no trial completed ({states})"
    if any("diverged" in s for s in summary["states"]):
        return DivergedError(f"{msg}: lower the top of tune.lr, keep train.clip_norm on, or check the data")
    return ConfigError(f"{msg}: raise --trials or --timeout, or see the failures in trials.csv")
