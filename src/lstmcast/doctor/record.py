"""What the doctor found (:class:`DoctorReport`): filled by report.py, read by the checks in checks.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lstmcast.findings import Finding
from lstmcast.model.estimate import Dims, LayerCount, ShapeRow


@dataclass
class DoctorReport:
    """What the doctor found; ``as_dict()`` is the ``--json`` output."""

    dims: Dims
    trace: list[ShapeRow]
    layers: list[LayerCount]
    n_parameters: int
    memory_bytes: dict[str, int]
    flops_per_step: int
    device: str
    precision: str
    findings: list[Finding] = field(default_factory=list)
    train_windows: int | None = None
    val_windows: int | None = None
    val_sample: int | None = None  # train.val_windows when below val_windows: validation uses that many
    series_bytes: int | None = None
    step_seconds: float | None = None  # the median of the timed steps
    step_spread: tuple[float, float] | None = None  # their 10th and 90th percentiles
    step_samples: int = 0  # timed steps, after the warm-up
    source: str = "config only (no data): F from the config's target and feature columns"

    @property
    def windows_per_parameter(self) -> float | None:
        return None if self.train_windows is None else self.train_windows / self.n_parameters

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def shape(self, name: str) -> tuple[int, ...]:
        """The traced shape of the row called ``name`` (e.g. "lstm output")."""
        for row in self.trace:
            if row.name == name:
                return row.shape
        raise KeyError(f"no trace row {name!r}; rows: {[r.name for r in self.trace]}")

    def error_text(self) -> str:
        """The text ``train`` refuses with: every error finding, message and fix."""
        return "; ".join(finding_text(f) for f in self.errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_first": True, "source": self.source, "dims": asdict(self.dims),
            "trace": [{**asdict(r), "shape": list(r.shape)} for r in self.trace],
            "parameters": {"layers": [asdict(c) for c in self.layers], "total": self.n_parameters},
            "train_windows": self.train_windows, "val_windows": self.val_windows, "val_sample": self.val_sample,
            "windows_per_parameter": self.windows_per_parameter, "memory_bytes": dict(self.memory_bytes),
            "series_bytes": self.series_bytes, "flops_per_step": self.flops_per_step,
            "step_seconds": self.step_seconds,
            "step_spread": list(self.step_spread) if self.step_spread else None, "step_samples": self.step_samples,
            "device": self.device, "precision": self.precision,
            "findings": [f.as_dict() for f in self.findings], "ok": self.ok,
        }


def finding_text(f: Finding) -> str:
    return f.message + (f": {f.fix}" if f.fix else "")
