"""POST /v1/update: carried per-series state (issue 24) behind a small interface, applied one series at a time.

``StateBackend`` is what the service needs from a stateful model: whether it carries state, ``update(rows)``
advancing the series in ``rows`` and returning a summary, and ``snapshot()`` writing the states atomically (the
run's own state file: a restart resumes from the last one). ``SeriesLocks`` serialises updates per series id:
two updates of one series run one after the other, in arrival order, and neither is lost; updates of other
series do not wait for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import pandas as pd

from lstmcast.errors import LstmcastError


class NotStateful(LstmcastError, ValueError):
    """An update sent to a window model (answered 409: the model keeps no state to advance)."""

    exit_code = 2


class StateBackend(Protocol):
    stateful: bool

    def update(self, rows: pd.DataFrame) -> dict[str, Any]: ...

    def snapshot(self) -> None: ...


class ForecasterState:
    """The served Forecaster's carried state: ``Forecaster.update`` once issue 24 provides it.

    A window model (``model.stateful`` false, or a Forecaster without ``update``) refuses every update.
    """

    def __init__(self, fc: Any):
        self.fc = fc
        self.stateful = bool(getattr(fc.config_.model, "stateful", False)) and callable(getattr(fc, "update", None))

    def update(self, rows: pd.DataFrame) -> dict[str, Any]:
        if not self.stateful:
            raise NotStateful(NOT_STATEFUL)
        summary = self.fc.update(rows)
        as_dict = getattr(summary, "as_dict", None)  # Forecaster.update's UpdateSummary (issue 24)
        return as_dict() if callable(as_dict) else summary if isinstance(summary, dict) else {"summary": str(summary)}

    def snapshot(self) -> None:
        save = getattr(self.fc, "save_state", None)  # issue 24: the state file, written atomically
        if callable(save):
            save()


NOT_STATEFUL = ("this run is a window model (model.stateful: false): it keeps no state between calls, so there is "
                "nothing to update; send the recent rows to POST /v1/forecast instead, or train with "
                "model.stateful: true to serve updates")


class SeriesLocks:
    """One asyncio lock per series id, taken in sorted order (no two updates can deadlock)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, ids: Iterable[str]) -> AsyncIterator[None]:
        taken = []
        try:
            for sid in sorted(set(ids)):
                lock = self._locks.setdefault(sid, asyncio.Lock())
                await lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()


def series_ids(rows: pd.DataFrame, id_col: str | None) -> list[str]:
    """The series an update touches ("" for a single-series model)."""
    if not id_col or id_col not in rows.columns:
        return [""]
    return [str(v) for v in pd.unique(rows[id_col])]
