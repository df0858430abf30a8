"""Dynamic batching: requests that arrive while the model is busy (or within ``max_wait``) share one forward.

One asyncio task takes the first waiting request, then whatever else is queued, up to ``max_batch``; with
``max_wait`` > 0 it waits at most that long after the first for more to arrive. A lone request therefore waits at
most ``max_wait`` before its forward starts (the default 0: never; under load, batches form on their own while
the previous forward runs). A batch of several runs on one dedicated thread, so the event loop keeps reading
requests meanwhile; a lone request runs on the event loop's own thread (a hand-off to the thread and back cost
more than a small forward). Requests whose caller has gone (disconnected, timed out) are dropped before the
forward and cost nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

In = TypeVar("In")
_JOIN_TURNS = 8  # event-loop turns a batch waits for requests that have arrived and are being checked
Out = TypeVar("Out")
R = TypeVar("R")


@dataclass
class _Item(Generic[In]):
    payload: In
    future: asyncio.Future[Any]
    queued: float = field(default_factory=time.perf_counter)


class Batcher(Generic[In, Out]):
    """Merge concurrent ``submit`` calls into calls of ``run(batch)`` on one worker thread.

    ``run`` returns one result per item, in order: a value or the exception to raise for that caller.
    ``on_batch(size, seconds)`` is told each batch's size and its forward time (for /metrics); ``arriving()`` says how
many requests have arrived but are not queued yet (a batch lets them join for a few loop turns, never waiting on
the clock for them).
    """

    def __init__(self, run: Callable[[list[In]], Sequence[Out | BaseException]], max_batch: int = 64,
                 max_wait: float = 0.0, initializer: Callable[[], None] | None = None,
                 on_batch: Callable[[int, float], None] | None = None, arriving: Callable[[], int] | None = None):
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got {max_batch} and {max_wait}")
        self.run, self.max_batch, self.max_wait, self.on_batch = run, max_batch, max_wait, on_batch
        self.arriving = arriving or (lambda: 0)
        self._queue: asyncio.Queue[_Item[In]] = asyncio.Queue()
        self._arrived = asyncio.Event()  # set by each submit: a batch waiting for company wakes
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstmcast-forward",
                                        initializer=initializer)
        self._task: asyncio.Task[None] | None = None
        self.busy = False

    @property
    def depth(self) -> int:
        """Requests waiting for a forward (not counting the batch running now)."""
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="lstmcast-batcher")

    async def stop(self) -> None:
        """Finish the queued requests, then stop the task and the thread."""
        while self.depth or self.busy:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def submit(self, payload: In) -> Out:
        """The result of ``payload``'s forward; cancelling the caller drops it from the queue."""
        return await self.enqueue(payload)

    def enqueue(self, payload: In) -> asyncio.Future[Any]:
        """The future of ``payload``'s forward (its result, or the error for it); cancelling it drops ``payload``
        from the queue. ``submit`` without a coroutine: a caller that waits on more than the forward (the
        connection, a time-out) needs no task to wrap it."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(payload, fut))
        self._arrived.set()
        return fut

    async def call(self, fn: Callable[[], R]) -> R:
        """``fn()`` on the model thread, between batches (a state update must not race a forward)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _take(self) -> list[_Item[In]]:
        batch = [await self._queue.get()]
        deadline = batch[0].queued + self.max_wait
        for _ in range(_JOIN_TURNS):  # requests already read and being checked join this batch: a few loop turns
            if not self.arriving() or self._queue.qsize() >= self.max_batch - 1:
                break
            await asyncio.sleep(0)
        # wait for a submit's signal, not wait_for(queue.get()): a time-out racing a get can drop an item (Python <
        # 3.12); and not a sleep(0.5 ms) poll: uvloop's timers count whole milliseconds, so that spun the thread
        while self._queue.qsize() < self.max_batch - 1 and (left := deadline - time.perf_counter()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                break
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return [item for item in batch if not item.future.done()]  # gone callers cost nothing

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._take()
            if not batch:
                continue
            self.busy = True
            t0 = time.perf_counter()
            try:
                payloads = [i.payload for i in batch]
                if len(batch) == 1 and self._queue.empty():  # alone: two thread hand-offs would cost more
                    results = self.run(payloads)  # than the forward (ms each on a loaded machine)
                else:
                    results = await loop.run_in_executor(self._pool, self.run, payloads)
            except Exception as exc:  # noqa: BLE001 - a bug in the forward fails this batch's callers, not the server
                results = [exc] * len(batch)
            finally:
                self.busy = False
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - t0)
            for item, res in zip(batch, results):
                if item.future.done():
                    continue
                if isinstance(res, BaseException):
                    item.future.set_exception(res)
                else:
                    item.future.set_result(res)
