"""Watch the LSTM learn: a Trainer callback ``(view, record) -> None`` writing TensorBoard to ``RUN/tb/``.

Every epoch: train and validation loss, learning rate, gradient norm before clipping, fraction of clipped
steps, skipped non-finite steps, samples/s. Every ``monitor.every`` epochs, on a fixed probe batch from
the validation split (training/probe.py): per layer h_n / c_n histograms, gate means and saturated
fractions, dead units; weight histograms and the gradient of the training loss on the probe batch.
The config (and the doctor's report, when given) go in as text. Nothing runs per training step.

The probe keeps to a time budget: a probe that would push the monitor's total time above
``max_overhead`` (5%) of the training time so far is postponed to a later epoch. A missing tensorboard
package or an unwritable log folder only warns (FAULTS.md U4); the statistics are still collected,
saved to ``monitor.json`` and turned into findings (saturated forget gates, dead units, exploding
gradient norms).

>>> mon = Monitor(None, tensorboard=False)          # statistics only, no event files
>>> # Forecaster(cfg).fit(data, callbacks=[mon]); mon.findings()
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcast import atomic
from lstmcast.findings import Finding

if TYPE_CHECKING:
    from lstmcast.config import ForecastConfig
    from lstmcast.data.windows import Batch
    from lstmcast.training.records import EpochRecord, StepView

log = logging.getLogger(__name__)

FORGET_SATURATED = 0.5  # share of saturated forget-gate activations that makes a finding
DEAD_UNITS = 0.25  # share of dead hidden units in a layer that makes a finding
HIDDEN_FLOOR = 4  # never suggest a model.hidden_size below this (as diagnosis.HIDDEN_FLOOR)
GRAD_SPIKE = 10.0  # an epoch's mean gradient norm this many times the median of the earlier epochs
SCALARS = {"loss/train": "train_loss", "loss/val": "val_loss", "optim/lr": "lr",
           "optim/grad_norm": "grad_norm", "optim/clipped_fraction": "clipped_fraction",
           "optim/skipped_steps": "skipped_steps", "speed/samples_per_s": "samples_per_s"}


class Monitor:
    """TensorBoard and probe statistics for one training run; pass it in ``Trainer(callbacks=[...])``.
    Its ``state()`` goes into every checkpoint under ``checkpoint_key``, so a resumed run continues it.

    ``run_dir`` None (or ``tensorboard=False``) collects statistics without event files. The event files
    are opened at the end of the first epoch, so a run that fails before training leaves no folder.
    """

    checkpoint_key = "monitor"

    def __init__(self, run_dir: str | os.PathLike[str] | None, config: ForecastConfig | None = None, *,
                 every: int | None = None, tensorboard: bool | None = None, probe_size: int = 32,
                 max_overhead: float | None = 0.05, doctor_text: str | None = None):
        mon = config.monitor if config is not None else None
        self.every = every or (mon.every if mon else 1)
        self.probe_size, self.max_overhead = probe_size, max_overhead
        self.tb_dir = Path(run_dir) / "tb" if run_dir is not None else None
        want_tb = tensorboard if tensorboard is not None else (mon.tensorboard if mon else True)
        self.writer: Any = None
        self.tb_ok = False  # event files written and no failure so far
        self._want_tb = bool(want_tb and self.tb_dir is not None)  # opened at the first epoch: a run that
        self._config_text = config.to_yaml() if config is not None else None  # fails before writes nothing
        self.probes: list[dict[str, Any]] = []
        self.carried: list[dict[str, Any]] = []  # model.stateful: mean carried h / c norms per epoch (issue 24)
        self.history: list[dict[str, Any]] = []
        self.monitor_seconds = 0.0  # all the monitor's time; probe_seconds: the probes' share, kept in budget
        self.probe_seconds = 0.0
        self._last_probe_s = 0.0
        self.train_seconds = 0.0
        self.postponed = 0
        self._batch: Batch | None = None
        self._probe_failed = False
        self._clip_norm: float | None = None
        self._doctor_text = doctor_text

    # -- TensorBoard, failing soft ------------------------------------------------------------
    def _open(self) -> None:
        self._want_tb = False
        self.writer = self._open_writer()
        self.tb_ok = self.writer is not None
        if self._config_text:
            self._text("config", self._config_text)
        if self._doctor_text:
            self._text("doctor", self._doctor_text)

    def _open_writer(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            log.warning("TensorBoard logging is off: the tensorboard package is not importable (%s); training "
                        "continues. Install it (pip install tensorboard) or pass --no-tensorboard", exc)
            return None
        try:
            return SummaryWriter(log_dir=str(self.tb_dir), flush_secs=30)
        except Exception as exc:  # noqa: BLE001 - any failure to open the log folder only warns (FAULTS U4)
            self._tb_failed(exc)
            return None

    def _tb_failed(self, exc: BaseException) -> None:
        log.warning("TensorBoard logging to %s failed (%s: %s); training continues without it. Check that the "
                    "folder is writable and has free space, or pass --no-tensorboard", self.tb_dir,
                    type(exc).__name__, exc)
        writer, self.writer, self.tb_ok = self.writer, None, False
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already failing; nothing more to report
                pass

    def _tb(self, method: str, *args: Any) -> None:
        if self.writer is None:
            return
        try:
            getattr(self.writer, method)(*args)
        except Exception as exc:  # noqa: BLE001 - a logging failure must never stop training (FAULTS U4)
            self._tb_failed(exc)

    def _text(self, tag: str, text: str) -> None:
        # four-space indent: TensorBoard renders text as markdown, this keeps YAML and tables verbatim
        self._tb("add_text", tag, "\n".join("    " + line for line in text.splitlines()), 0)

    # -- the callback -------------------------------------------------------------------------
    def __call__(self, trainer: StepView, rec: EpochRecord) -> None:
        t0 = time.perf_counter()
        self.train_seconds += rec.seconds
        self._clip_norm = trainer.cfg.clip_norm
        self.history.append(rec.as_dict())
        try:
            if self._want_tb:
                self._open()
            for tag, key in SCALARS.items():
                value = float(getattr(rec, key))
                if math.isfinite(value):
                    self._tb("add_scalar", tag, value, rec.epoch)
            norms = trainer.carried  # model.stateful: the carried-state norms (issue 24)
            if norms is not None:
                self.carried.append({"epoch": rec.epoch, **norms})
                for key, value in norms.items():
                    self._tb("add_scalar", f"carried_state/{key}_norm", value, rec.epoch)
            elif self._due(rec.epoch, last=rec.epoch >= trainer.cfg.max_epochs):  # window probes need windows
                t1 = time.perf_counter()
                self._probe(trainer, rec.epoch)
                self._last_probe_s = time.perf_counter() - t1
                self.probe_seconds += self._last_probe_s
        finally:
            self.monitor_seconds += time.perf_counter() - t0

    def _due(self, epoch: int, last: bool) -> bool:
        """Epoch 1, every ``every``-th and the last possible epoch, as long as the probes stay in budget
        (the first and the last always run: a curve needs ends, and the findings read the last probe)."""
        if self._probe_failed or (epoch % self.every and epoch != 1 and not last):
            return False
        if self.max_overhead is None:
            return True
        projected = self.probe_seconds + self._last_probe_s  # what the probes will have cost after this one
        if projected > self.max_overhead * self.train_seconds and epoch != 1 and not last:
            self.postponed += 1
            if self.postponed == 1:
                log.info("monitor: probe postponed to keep its cost under %.0f%% of training time",
                         100 * self.max_overhead)
            return False
        return True

    def _probe_batch(self, trainer: StepView) -> Batch:
        """A fixed batch of validation windows spread evenly over the split (training windows if none)."""
        if self._batch is None:
            import torch

            data = trainer.data
            pool = data.val_idx if len(data.val_idx) else data.train_idx
            pick = torch.linspace(0, len(pool) - 1, min(self.probe_size, len(pool))).round().long()
            b = trainer.gather(pool[pick.to(pool.device)])
            device = next(trainer.model.parameters()).device
            self._batch = type(b)(*(v.to(device).float().clone() if v is not None else None for v in b))
        return self._batch

    def _probe(self, trainer: StepView, epoch: int) -> None:
        from lstmcast.training.probe import probe_model

        t0 = time.perf_counter()
        b = self._probe_batch(trainer)
        try:
            probe = probe_model(trainer.model, b.past, b.y, trainer.loss_fn, future=b.future, static=b.static)
        except Exception as exc:  # noqa: BLE001 - the monitor must never stop training
            log.warning("monitor: the probe failed (%s: %s); hidden-state statistics are off for this run",
                        type(exc).__name__, exc)
            self._probe_failed = True
            return
        layers = [p.summary() for p in probe.layers]
        self.probes.append({"epoch": epoch, "layers": layers, "recompute_error": probe.recompute_error,
                            "seconds": time.perf_counter() - t0})
        if self.writer is not None:
            self._write_probe(trainer, epoch, probe, layers)

    def _histogram(self, tag: str, values: Any, step: int, bins: int = 30) -> None:
        """A histogram from torch statistics (TensorBoard's own goes through numpy BLAS: 10x slower here)."""
        t = values.detach().float().flatten()
        t = t[t.isfinite()]
        if self.writer is None or t.numel() == 0:
            return
        lo, hi = float(t.min()), float(t.max())
        span = (hi - lo) or max(abs(lo), 1.0) * 1e-6
        counts = t.histc(bins=bins, min=lo, max=lo + span)
        # right bucket edges, after an empty bucket whose edge marks the left end (TensorBoard's convention)
        limits = [lo] + (lo + span * (1 + t.new_tensor(range(bins))) / bins).tolist()
        self._tb("add_histogram_raw", tag, lo, hi, t.numel(), float(t.sum()), float(t.dot(t)), limits,
                 [0.0] + counts.tolist(), step)

    def _write_probe(self, trainer: StepView, epoch: int, probe: Any, layers: list[dict[str, Any]]) -> None:
        for k, (p, s) in enumerate(zip(probe.layers, layers), start=1):
            self._histogram(f"layer{k}/h_n", p.h_n, epoch)
            self._histogram(f"layer{k}/c_n", p.c_n, epoch)
            for gate in s["gate_mean"]:
                self._tb("add_scalar", f"gates/layer{k}/{gate}_mean", s["gate_mean"][gate], epoch)
                self._tb("add_scalar", f"gates/layer{k}/{gate}_saturated", s["gate_saturated"][gate], epoch)
            self._tb("add_scalar", f"units/layer{k}/dead_fraction", s["dead_units"] / max(1, s["units"]), epoch)
        for name, param in trainer.model.named_parameters():
            self._histogram(f"weights/{name}", param, epoch)
        for name, grad in probe.grads.items():
            self._histogram(f"grads/{name}", grad, epoch)
        self._tb("add_scalar", "probe/recompute_error", probe.recompute_error, epoch)

    def add_doctor(self, text: str | None) -> None:
        """The doctor's report as TensorBoard text (rendered by ``lstmcast.doctor.report.render_text``)."""
        if text and self.writer is not None:
            self._text("doctor", text)

    # -- resume: the history is part of the checkpoint --------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a resumed run needs to continue this monitor's history (JSON, in the checkpoint's state)."""
        return {"probes": list(self.probes), "clip_norm": self._clip_norm, "postponed": self.postponed,
                "seconds": {"monitor": self.monitor_seconds, "probe": self.probe_seconds, "train": self.train_seconds,
                            "last_probe": self._last_probe_s}}

    def resume(self, meta: dict[str, Any], saved: dict[str, Any] | None = None) -> None:
        """Continue the history of a run resumed from a checkpoint with state ``meta``: its probes, epochs and
        overhead up to the checkpoint, so monitor.json is never replaced by the probes after the resume point
        alone (nor by none, when the run had finished training). A checkpoint from before the monitor was in it
        takes the probes up to its epoch from ``saved``, the run's monitor.json."""
        state, epoch = meta.get("monitor"), meta.get("epoch")
        history = meta.get("history")
        self.history = [dict(h) for h in history if isinstance(h, dict)] if isinstance(history, list) else []
        if isinstance(state, dict) and _probes_ok(state.get("probes")):
            self.probes = list(state["probes"])
            clip, seconds = state.get("clip_norm"), state.get("seconds")
            self._clip_norm = float(clip) if isinstance(clip, (int, float)) and not isinstance(clip, bool) else None
            self.postponed = int(state.get("postponed", 0)) if isinstance(state.get("postponed"), int) else 0
            if isinstance(seconds, dict) and all(isinstance(seconds.get(k), (int, float))
                                                 for k in ("monitor", "probe", "train", "last_probe")):
                self.monitor_seconds, self.probe_seconds = float(seconds["monitor"]), float(seconds["probe"])
                self.train_seconds, self._last_probe_s = float(seconds["train"]), float(seconds["last_probe"])
        elif isinstance(saved, dict) and _probes_ok(saved.get("probes")) and isinstance(epoch, int):
            self.probes = [p for p in saved["probes"] if p["epoch"] <= epoch]
        elif state is not None:
            log.warning("monitor: the checkpoint's monitor history is malformed; the resumed run's monitor.json "
                        "holds the probes from the resume point on")

    # -- results ------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write pending events to disk (the Trainer calls this before an interrupted run stops)."""
        self._tb("flush")

    def close(self) -> None:
        """Flush and close the event files (safe to call twice)."""
        if self.writer is not None:
            self._tb("flush")
            if self.writer is not None:
                self._tb("close")
            self.writer = None

    def within_budget(self) -> bool | None:
        """Did the probes stay under ``max_overhead`` of the training time? None: no budget. The first and
        the last probe always run, so a short training can exceed it; the report says so rather than claim it."""
        if self.max_overhead is None:
            return None
        return self.probe_seconds <= self.max_overhead * self.train_seconds

    def findings(self) -> list[Finding]:
        return monitor_findings(self.probes, self.history, self._clip_norm)

    def summary(self) -> dict[str, Any]:
        return {"probe_size": self.probe_size, "every": self.every, "tensorboard": self.tb_ok,
                "overhead": {"monitor_seconds": self.monitor_seconds, "probe_seconds": self.probe_seconds,
                             "train_seconds": self.train_seconds,
                             "fraction": self.monitor_seconds / self.train_seconds if self.train_seconds else 0.0,
                             "postponed_probes": self.postponed, "max_overhead": self.max_overhead,
                             "within_budget": self.within_budget()},
                "probes": self.probes, "findings": [f.as_dict() for f in self.findings()],
                **({"carried_state_norms": self.carried} if self.carried else {})}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the summary (probes per epoch, findings, overhead) as JSON, atomically."""
        atomic.write_json(path, self.summary())


def _probes_ok(probes: Any) -> bool:
    """Probe summaries as _probe records them (what monitor_findings and the plots read), epochs ascending."""
    if not isinstance(probes, list):
        return False
    epochs = []
    for p in probes:
        if not isinstance(p, dict) or not isinstance(p.get("epoch"), int) or not isinstance(p.get("layers"), list):
            return False
        if not all(isinstance(layer, dict) and isinstance(layer.get("gate_saturated"), dict) and
                   isinstance(layer["gate_saturated"].get("forget"), (int, float)) and
                   isinstance(layer.get("dead_units"), int) and isinstance(layer.get("units"), int)
                   for layer in p["layers"]):
            return False
        epochs.append(p["epoch"])
    return epochs == sorted(epochs)


def monitor_findings(probes: list[dict[str, Any]], history: list[dict[str, Any]],
                     clip_norm: float | None = None) -> list[Finding]:
    """Findings from the last probe and the gradient norms of every epoch (pure: summaries in, findings out)."""
    found: list[Finding] = []
    clip = (f"keep train.clip_norm on (now {clip_norm:g}; 0.5-1.0 clips harder)" if clip_norm
            else "set train.clip_norm: 1.0")
    if probes:
        last = probes[-1]
        for k, layer in enumerate(last["layers"], start=1):
            sat = layer["gate_saturated"]["forget"]
            if sat >= FORGET_SATURATED:
                found.append(Finding(
                    "warning", "forget-gate-saturated",
                    f"{sat:.0%} of layer-{k} forget gates saturated (< 0.05 or > 0.95 on the probe batch at epoch "
                    f"{last['epoch']}): the cells keep or drop everything and pass almost no gradient",
                    f"lower train.lr or add clipping ({clip})"))
            dead, units = layer["dead_units"], layer["units"]
            if units and dead / units >= DEAD_UNITS:
                found.append(Finding(
                    "warning", "dead-units",
                    f"{dead} of {units} hidden units of layer {k} are dead (|h| < 1e-3 at every step of every "
                    f"probe sample at epoch {last['epoch']})",
                    f"lower train.lr, or reduce model.hidden_size towards {units - dead} units"
                    if units - dead >= HIDDEN_FLOOR else f"lower train.lr; do not shrink model.hidden_size below "
                    f"{HIDDEN_FLOOR} units"))
    spike = _gradient_spike(history)
    if spike is not None:
        epoch, norm, median = spike
        found.append(Finding(
            "warning", "exploding-gradients",
            f"the gradient norm jumped to {norm:.3g} at epoch {epoch}, {norm / median:.0f}x the median "
            f"{median:.3g} of the epochs before",
            f"lower train.lr and {clip}"))
    return found


def _gradient_spike(history: list[dict[str, Any]]) -> tuple[int, float, float] | None:
    """The worst epoch whose mean gradient norm exceeds GRAD_SPIKE x the median of the (>= 3) epochs before."""
    worst = None
    norms = [float(h.get("grad_norm", math.nan)) for h in history]
    for i in range(3, len(norms)):
        before = [n for n in norms[:i] if math.isfinite(n)]
        if len(before) < 3 or not math.isfinite(norms[i]):
            continue
        median = statistics.median(before)
        if median > 0 and norms[i] > GRAD_SPIKE * median:
            ratio = norms[i] / median
            if worst is None or ratio > worst[1] / worst[2]:
                worst = (int(history[i]["epoch"]), norms[i], median)
    return worst
