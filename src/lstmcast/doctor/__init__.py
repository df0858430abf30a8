"""The doctor before training (report.py, checks.py) and the diagnosis after it (diagnosis.py, headline.py).

``lstmcast.doctor.doctor`` is the entry point; it loads lazily (it needs torch).
"""

from __future__ import annotations

from typing import Any

__all__ = ["doctor"]


def __getattr__(name: str) -> Any:
    if name == "doctor":
        from lstmcast.doctor.report import doctor

        return doctor
    raise AttributeError(f"module 'lstmcast.doctor' has no attribute {name!r}")
