"""The serve package's parts without a server: the batcher's merging and dropping, the token rules, the Prometheus
text and the per-series update locks."""

from __future__ import annotations

import asyncio
import time

import pytest

from lstmcast.errors import ConfigError

pytest.importorskip("starlette")

from lstmcast.serve.auth import TOKEN_ENV, authorized, is_loopback, load_token
from lstmcast.serve.batcher import Batcher
from lstmcast.serve.metrics import Histogram
from lstmcast.serve.state import GroupSnapshots, SeriesLocks


def test_queued_requests_share_one_call_and_each_gets_its_own_result():
    calls: list[list[int]] = []

    def run(batch: list[int]) -> list[object]:
        calls.append(list(batch))
        time.sleep(0.02)
        return [ValueError(f"bad {x}") if x == 3 else x * 10 for x in batch]

    async def main() -> list[object]:
        b = Batcher(run, max_batch=8, max_wait=0.0)
        b.start()
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.005)  # the first forward is running: the next ones queue behind it
        rest = [asyncio.ensure_future(b.submit(x)) for x in (1, 2, 3, 4)]
        out = await asyncio.gather(first, *rest, return_exceptions=True)
        await b.stop()
        return out

    out = asyncio.run(main())
    assert out[:3] == [0, 10, 20] and out[4] == 40
    assert isinstance(out[3], ValueError) and str(out[3]) == "bad 3"
    assert calls[0] == [0] and calls[1] == [1, 2, 3, 4]


def test_a_lone_request_waits_at_most_max_wait_and_a_cancelled_one_is_never_run():
    seen: list[list[str]] = []

    def run(batch: list[str]) -> list[str]:
        seen.append(list(batch))
        return [x.upper() for x in batch]

    async def main() -> tuple[float, str]:
        b = Batcher(run, max_batch=4, max_wait=0.05)
        b.start()
        t0 = time.perf_counter()
        lone = await b.submit("a")
        waited = time.perf_counter() - t0
        gone = asyncio.ensure_future(b.submit("gone"))
        await asyncio.sleep(0.005)
        gone.cancel()  # the caller disconnected while its request waited for company
        kept = await b.submit("kept")
        await b.stop()
        return waited, lone + kept

    waited, got = asyncio.run(main())
    assert got == "AKEPT" and 0.04 <= waited < 1.0
    assert ["gone"] not in seen and all("gone" not in batch for batch in seen)


def test_bad_batcher_limits_are_refused():
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        Batcher(lambda b: b, max_batch=0)


def test_the_token_rules(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert load_token(None, "127.0.0.1") is None
    with pytest.raises(ConfigError, match="bearer token is required") as exc:
        load_token(None, "0.0.0.0")
    assert exc.value.exit_code == 2
    (tmp_path / "t").write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_token(tmp_path / "t", "0.0.0.0")
    with pytest.raises(ConfigError, match="could not be read"):
        load_token(tmp_path / "absent", "0.0.0.0")
    (tmp_path / "t").write_text("s3cret-token-of-20-chars\nignored\n")
    assert load_token(tmp_path / "t", "0.0.0.0") == "s3cret-token-of-20-chars"
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment-1")
    assert load_token(None, "0.0.0.0") == "from-the-environment-1"
    assert authorized("Bearer from-the-environment-1", "from-the-environment-1")
    assert not authorized(None, "from-the-environment-1") and not authorized("Bearer x", "from-the-environment-1")
    assert not authorized("from-the-environment-1", "from-the-environment-1")  # the scheme is required
    assert authorized(None, None)


def test_histogram_text_is_cumulative():
    h = Histogram((0.001, 0.01))
    for v in (0.0005, 0.002, 0.002, 5.0):
        h.observe(v)
    lines = h.lines("x", 'route="f"')
    assert lines[:3] == ['x_bucket{route="f",le="0.001"} 1', 'x_bucket{route="f",le="0.01"} 3',
                         'x_bucket{route="f",le="+Inf"} 4']
    assert lines[-1] == 'x_count{route="f"} 4' and h.count == 4


def test_series_locks_serialise_one_series_and_not_others():
    order: list[str] = []

    async def update(locks: SeriesLocks, ids: list[str], tag: str, pause: float) -> None:
        async with locks.hold(ids):
            order.append(f"{tag}+")
            await asyncio.sleep(pause)
            order.append(f"{tag}-")

    async def main() -> None:
        locks = SeriesLocks()
        await asyncio.gather(update(locks, ["a"], "A1", 0.03), update(locks, ["a", "b"], "A2", 0.0),
                             update(locks, ["c"], "C", 0.0))

    asyncio.run(main())
    assert order.index("A1-") < order.index("A2+")  # A2 touches series a: it waits for A1
    assert order.index("C-") < order.index("A1-")  # series c does not wait


def test_the_cli_loads_no_serving_stack_until_serve_runs():
    import subprocess
    import sys

    code = ("import sys, lstmcast.cli; "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'lstmcast.serve.app', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_forecast_answer_is_the_text_json_dumps_writes():
    """The answer's JSON, formatted column by column, against json.dumps of the same records, byte for byte; a column
    it cannot format (NaN, mixed objects) goes through json.dumps itself, which refuses NaN as before."""
    import json

    import numpy as np

    from lstmcast.serve.answers import _json_column, forecast_json
    from lstmcast.serve.engine import Table

    def dumped(table: Table) -> bytes:
        values = [_json_column(a) for a in table.arrays]
        return json.dumps({"forecast": [dict(zip(table.columns, r)) for r in zip(*values)]}, allow_nan=False).encode()

    times = np.arange("2024-01-01T00", "2024-01-01T05", dtype="datetime64[h]").astype("datetime64[ns]")
    rng = np.random.default_rng(3)
    tables = [Table(["time", "y"], [times, rng.normal(size=5) * 1e3]),
              Table(["id", "time", "y", "y_lo_90", "y_hi_90"],
                    [np.array(['a"b', "é✓", "100%", "x\\y", "\n"], dtype=object), times,
                     np.array([1e-320, -0.0, 1e300, 3.0, 2.5e-7]), rng.normal(size=5), rng.normal(size=5)]),
              Table(["step", "50%"], [np.arange(5, dtype=np.int64), np.float32(rng.normal(size=5))]),
              Table(["id", "flag"], [np.array(["a", 7, None, 2.5, "b"], dtype=object), np.array([True] * 5)]),
              Table(["time", "y"], [times[:0], np.zeros(0)])]
    for table in tables:
        assert forecast_json(table) == dumped(table)
        json.loads(forecast_json(table))
    with pytest.raises(ValueError):  # a NaN forecast is never written as text (the service answers 500)
        forecast_json(Table(["time", "y"], [times, np.array([1.0, np.nan, 2, 3, 4])]))


def test_a_lone_request_waiting_for_company_does_not_spin_the_event_loop():
    """The server's loop is uvloop, whose timers count whole milliseconds: the batcher's old sleep(0.5 ms) poll then
    ran back to back and kept a core busy for all of max_wait (0.2 s of CPU in a 0.3 s wait)."""
    uvloop = pytest.importorskip("uvloop")

    batches: list[list[int]] = []

    async def main() -> tuple[float, float, list[int]]:
        b = Batcher(lambda xs: batches.append(list(xs)) or xs, max_batch=4, max_wait=0.3)
        b.start()
        await b.submit(0)  # the first batch's set-up out of the way
        t0, cpu0 = time.perf_counter(), time.thread_time()
        lone = await b.submit(1)
        waited, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        late = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0.02)
        joined = asyncio.ensure_future(b.submit(3))  # arrives within max_wait: shares the batch
        out = [lone, *(await asyncio.gather(late, joined))]
        await b.stop()
        return waited, cpu, out

    waited, cpu, out = uvloop.run(main()) if hasattr(uvloop, "run") else asyncio.run(main())
    assert waited >= 0.29 and cpu < 0.05 and out == [1, 2, 3]
    assert batches == [[0], [1], [2, 3]]


def test_concurrent_updates_share_a_snapshot_written_after_each_and_a_failed_one_reaches_every_waiter():
    """Group commit: an update's caller returns only after a snapshot begun after its update; updates applied while
    one is being written share the next; a snapshot that fails fails each caller waiting on it, and the next
    caller writes again."""
    from concurrent.futures import ThreadPoolExecutor

    log: list[str] = []
    fail = [False]
    pool = ThreadPoolExecutor(1)  # the model thread: updates and snapshots in the order they were queued

    def snapshot() -> None:
        log.append("snap")
        time.sleep(0.05)
        if fail[0]:
            raise OSError("disk full")

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        group = GroupSnapshots(snapshot, lambda fn: loop.run_in_executor(pool, fn))

        async def update(name: str) -> str:
            def apply() -> int:
                log.append(name)
                return group.applied()
            n = await loop.run_in_executor(pool, apply)
            await group.covering(n)
            log.append(name + " answered")
            return name
        first = await asyncio.gather(*(update(f"u{k}") for k in range(5)))
        fail[0] = True
        failed = await asyncio.gather(update("x"), update("y"), return_exceptions=True)
        fail[0] = False
        return [*first, *failed, await update("z")]

    out = asyncio.run(main())
    pool.shutdown()
    assert out[:5] == [f"u{k}" for k in range(5)] and out[-1] == "z"
    assert [type(e) for e in out[5:7]] == [OSError, OSError]
    for name in ["u0", "u1", "u2", "u3", "u4", "z"]:  # a snapshot between each update and its answer
        assert "snap" in log[log.index(name):log.index(name + " answered")]
    assert log.count("snap") < 5 + 2 + 1  # the five concurrent updates did not take five snapshots
