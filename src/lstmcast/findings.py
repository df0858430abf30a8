"""Findings: one piece of the guide's advice applied to this config, data or run.

Shared by the doctor (before training), the monitor (during) and the diagnosis (after).

>>> f = Finding("error", "dropout-one-layer", "model.dropout=0.2 has no effect with num_layers=1",
...             "set model.num_layers>=2 or model.dropout=0")
>>> f.is_error
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "advice", "info"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # stable identifier, e.g. "hidden-size-range"
    message: str  # what is wrong or notable, with the real numbers
    fix: str = ""  # the concrete cure

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"[{self.severity}] {self.message}" + (f": {self.fix}" if self.fix else "")


def split_message(text: str) -> tuple[str, str]:
    """lstmcast messages read 'what: how to fix'; split at the last ': ' (joining gives the text back)."""
    what, sep, fix = text.rpartition(": ")
    return (what, fix) if sep else (text, "")
