"""POST /v1/update: carried per-series state (issue 24) behind a small interface, applied one series at a time.

``StateBackend`` is what the service needs from a stateful model: whether it carries state, ``update(rows)``
advancing the series in ``rows`` and returning a summary, and ``snapshot()`` writing the states atomically (the
run's own state file: a restart resumes from the last one; ``GroupSnapshots`` lets concurrent updates share one).
``SeriesLocks`` serialises updates per series id:
two updates of one series run one after the other, in arrival order, and neither is lost; updates of other
series do not wait for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from lstmcast.errors import LstmcastError

if TYPE_CHECKING:
    from lstmcast.forecaster import Forecaster


class NotStateful(LstmcastError, ValueError):
    """An update sent to a window model (answered 409: the model keeps no state to advance)."""

    exit_code = 2


class StateBackend(Protocol):
    stateful: bool

    def update(self, rows: pd.DataFrame) -> dict[str, Any]: ...

    def snapshot(self) -> None: ...

    def forecast(self, ids: list[str] | None) -> pd.DataFrame: ...


class ForecasterState:
    """The served Forecaster's carried state (``model.stateful``, issue 24): ``Forecaster.update`` advances it,
    ``Forecaster.save_state`` writes it atomically into the run folder (a restart loads it), and
    ``Forecaster.predict_state`` forecasts from it. A window model refuses every update."""

    def __init__(self, fc: Forecaster):
        self.fc = fc
        self.stateful = bool(fc.config_.model.stateful)

    def update(self, rows: pd.DataFrame) -> dict[str, Any]:
        if not self.stateful:
            raise NotStateful(NOT_STATEFUL)
        return self.fc.update(rows, persist=False).as_dict()  # written by snapshot(), before the answer

    def snapshot(self) -> None:
        self.fc.save_state()

    def forecast(self, ids: list[str] | None) -> pd.DataFrame:
        """The forecast of ``ids`` (None: the single series) from their carried states, which it never changes."""
        return self.fc.predict_state(ids)


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


class GroupSnapshots:
    """Group commit of the carried states: every update is in a snapshot written after it and before its caller
    hears of it, but updates applied while a snapshot is written share the next one (a snapshot, with its fsync,
    cost several updates: one per update made a stateful service's throughput that of its disk).

    ``applied()`` is called on the model thread after each update and returns that update's number; ``covering(n)``
    returns once a snapshot that started after update ``n`` has been written (its error, if it failed, goes to every
    caller waiting for it). ``run(fn)`` runs ``fn`` on the model thread, after the updates queued before it."""

    def __init__(self, snapshot: Callable[[], None], run: Callable[[Callable[[], int]], Awaitable[int]]):
        self.snapshot, self.run = snapshot, run
        self.count = 0  # updates applied (model thread)
        self.saved = 0  # updates in a written snapshot (event loop)
        self._writing: asyncio.Future[None] | None = None

    def applied(self) -> int:
        self.count += 1
        return self.count

    async def covering(self, n: int) -> None:
        while self.saved < n:
            if self._writing is None:
                self._writing = asyncio.ensure_future(self._write())
            await asyncio.shield(self._writing)

    async def _write(self) -> None:
        def write() -> int:
            upto = self.count  # on the model thread, so no update runs between this and the snapshot
            self.snapshot()
            return upto
        try:
            self.saved = max(self.saved, await self.run(write))
        finally:
            self._writing = None


def series_ids(rows: pd.DataFrame, id_col: str | None) -> list[str]:
    """The series an update touches ("" for a single-series model)."""
    if not id_col or id_col not in rows.columns:
        return [""]
    return [str(v) for v in pd.unique(rows[id_col])]
