"""`lstmcast serve` under load, on loopback: latency and throughput at 1, 8 and 64 concurrent clients.

Trains a small run (one hourly series), starts `lstmcast serve RUN --port 0` in its own process and drives it with
an asyncio HTTP/1.1 client (one keep-alive connection per client; each request one series' last ``window`` rows as
JSON, several different windows in turn). Bounded: each level stops after ``--requests`` requests or
``--seconds``, whichever comes first; the server is stopped with SIGTERM at the end (it must exit 0).

Compared, in this process, on the same windows:
- ``Forecaster.predict`` of the same frame, one request at a time (what a user's own loop would do);
- the model's forward alone: ``model(x)`` on one window (B=1) and on 64 windows at once (B=64), requests/s =
  windows/s;
- the service's batched path without HTTP: ``Engine.forecast_many`` of 64 checked requests (the forward plus the
  scaling and the output tables, what one batch of the server runs).

Besides wall latency, each level reports the CPU time the server process used per request (user + system, all its
threads, from /proc/<pid>/stat) and this client's own: on a machine shared with other jobs the wall figures mostly
measure waiting for a core, the CPU figures what a request costs.

Targets (issue 25): 1 client p50 <= 3 ms; 64 clients >= 0.5x the in-process batched path's requests/s with
p99 <= 50 ms; 0 errors; the server's memory flat over a soak (``--soak-s``, 8 clients; RSS sampled from /proc).

``--stateful``: the same levels with a stateful model (``model.stateful: true``, 64 hourly series, README "Carried
state"): each request is POST /v1/forecast of one new row of the client's own series, which the server applies to
that series' carried state, snapshots (the run's state files, before the answer) and forecasts from (update +
forecast, one request). Compared, in this process on a copy of the same run, with what a user's own loop would do
for the same rows: ``Forecaster.update`` + ``save_state`` + ``predict_state`` of the series, one row at a time.

``--against SRC``: this version's server and the one in SRC (e.g. ``git archive COMMIT src | tar -x -C DIR``) side
by side, each level driven on each in turn for ``--rounds`` rounds (medians): a before/after on one machine state.

Usage: python benchmarks/serve_load.py [--quick | --smoke] [--stateful] [--requests N] [--seconds S] [--soak-s S]
       [--run RUN] [--server-src SRC] [--against SRC [--rounds R]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def train_run(folder: Path, smoke: bool) -> Path:
    """A small hourly model (window 48, horizon 24, hidden 32x2; smoke: window 24, hidden 16) saved to ``folder``."""
    import pandas as pd

    from lstmcast import Forecaster

    n = 400 if smoke else 2000
    t = np.arange(n)
    rng = np.random.default_rng(0)
    y = 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.2 * rng.standard_normal(n)
    frame = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="h"), "y": y})
    frame.to_csv(folder / "series.csv", index=False)
    window, hidden = (24, 16) if smoke else (48, 32)
    cfg = {"data": {"time_col": "time", "target": "y", "horizon": 6 if smoke else 24, "window": window,
                    "season": 24, "calendar": "none"},
           "model": {"hidden_size": hidden, "num_layers": 1 if smoke else 2, "dropout": 0.0},
           "train": {"max_epochs": 1, "min_steps": 0, "min_epoch_steps": 1, "refit": False, "precision": "fp32",
                     "threads": 1}}
    Forecaster(cfg).fit(frame, progress=False).save(folder / "run", outputs=False)
    return folder / "run"


def request_bodies(series_csv: Path, window: int, k: int = 16) -> tuple[list[bytes], list]:
    """``k`` different single-series requests (the last ``window`` rows ending at k different points) as JSON bodies,
    and the same windows as DataFrames."""
    import pandas as pd

    frame = pd.read_csv(series_csv, parse_dates=["time"])
    bodies, frames = [], []
    for j in range(k):
        part = frame.iloc[len(frame) - window - j: len(frame) - j]
        frames.append(part.reset_index(drop=True))
        rows = [{"time": str(ts), "y": float(v)} for ts, v in zip(part["time"], part["y"])]
        bodies.append(json.dumps({"rows": rows}).encode())
    return bodies, frames


STATEFUL_SERIES = 64  # one per client at the 64-client level: no two clients wait on one series' lock


def stateful_value(k: int, n: int) -> float:
    """Series k's value at hour n (a daily cycle, its own phase and level)."""
    return float(10 + k % 7 + 3 * np.sin(2 * np.pi * n / 24 + k))


def train_stateful_run(folder: Path, smoke: bool) -> tuple[Path, int]:
    """A stateful model (``model.stateful: true``) of STATEFUL_SERIES hourly series (hidden 32x2, horizon 24; smoke:
    8 series, hidden 16) saved to ``folder``; the rows each series was trained on (its carried state ends there)."""
    import pandas as pd

    from lstmcast import Forecaster

    series, n = (8, 120) if smoke else (STATEFUL_SERIES, 400)  # (stateful_main counts on these)
    times = pd.date_range("2024-01-01", periods=n, freq="h")
    frame = pd.concat([pd.DataFrame({"time": times, "id": f"s{k}", "y": [stateful_value(k, i) for i in range(n)]})
                       for k in range(series)], ignore_index=True)
    cfg = {"data": {"time_col": "time", "id_col": "id", "target": "y", "horizon": 6 if smoke else 24,
                    "window": 24 if smoke else 48, "season": None, "calendar": "none"},
           "model": {"stateful": True, "hidden_size": 16 if smoke else 32, "num_layers": 1 if smoke else 2,
                     "dropout": 0.0},
           "train": {"max_epochs": 1, "min_steps": 0, "min_epoch_steps": 1, "refit": False, "precision": "fp32",
                     "threads": 1, "tbptt_steps": 64}}
    Forecaster(cfg).fit(frame, progress=False).save(folder / "run", outputs=False)
    return folder / "run", n


class StatefulBodies:
    """Each client's next row of its own series (client c: series s{c mod S}) as a JSON body, one hour after the
    row it sent before; ``frame(k)`` the same row as a DataFrame (the in-process comparison)."""

    def __init__(self, nexts: list[int]):
        self.series, self.next = len(nexts), list(nexts)
        self.start = np.datetime64("2024-01-01T00:00:00")

    def row(self, k: int) -> dict:
        n = self.next[k]
        self.next[k] += 1
        stamp = str(self.start + np.timedelta64(n, "h")).replace("T", " ")
        return {"time": stamp, "y": stateful_value(k, n), "id": f"s{k}"}

    def __call__(self, client: int) -> bytes:
        return json.dumps({"rows": [self.row(client % self.series)]}).encode()

    def frame(self, k: int):
        import pandas as pd

        r = self.row(k)
        return pd.DataFrame({"time": [pd.Timestamp(r["time"])], "id": [r["id"]], "y": [r["y"]]})


def in_process_stateful(run: Path, nexts: list[int], rounds: int) -> dict:
    """Per-row ms of what a user's loop does without the service, on a copy of ``run``: Forecaster.update of one
    series' new row, save_state (the server snapshots before it answers) and predict_state of that series."""
    from lstmcast import Forecaster

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy)
        fc = Forecaster.load(copy)
        gen = StatefulBodies(nexts)
        series = gen.series

        def one(k: int) -> None:
            fc.update(gen.frame(k), persist=False)
            fc.save_state()
            fc.predict_state([f"s{k}"])
        one(0)
        times = []
        for i in range(rounds):
            t0 = time.perf_counter()
            one(i % series)
            times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    return {"update_forecast_ms": ms, "update_forecast_req_s": 1e3 / ms}


SERVER_SRC = [ROOT / "src"]  # --server-src: the lstmcast the server runs (another version's src, to compare)


def start_server(run: Path, max_wait_ms: float, max_batch: int,
                 src: Path | None = None) -> tuple[subprocess.Popen, str, int]:
    env = {**os.environ, "PYTHONPATH": str(src or SERVER_SRC[0]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lstmcast", "serve", str(run), "--port", "0", "--threads", "1",
                             "--max-wait-ms", str(max_wait_ms), "--max-batch", str(max_batch)],
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()
    if " on http://" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read()[-2000:]}")
    host, port = line.split(" on http://")[1].split()[0].rsplit(":", 1)
    return proc, host, int(port)


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, path: str,
               body: bytes = b"") -> tuple[int, bytes]:
    """One request on a keep-alive connection: (status, body)."""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, await reader.readexactly(length)


Bodies = list[bytes] | Callable[[int], bytes]  # bodies sent in turn, or the next body of client c


async def drive(host: str, port: int, clients: int, bodies: Bodies, requests: int, seconds: float) -> dict:
    """``clients`` connections sending requests until ``requests`` were sent in all or ``seconds`` passed."""
    lat: list[float] = []
    errors = [0]
    left = [requests]
    deadline = time.perf_counter() + seconds

    async def client(c: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        i = c
        while left[0] > 0 and time.perf_counter() < deadline:
            left[0] -= 1
            body = bodies(c) if callable(bodies) else bodies[i % len(bodies)]
            t0 = time.perf_counter()
            status, out = await http(reader, writer, "POST", "/v1/forecast", body)
            lat.append(time.perf_counter() - t0)
            if status != 200 or not out.startswith(b'{"forecast"'):
                errors[0] += 1
            i += clients
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {"clients": clients, "requests": len(lat), "errors": errors[0], "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "req_s": len(lat) / wall}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


async def metric(host: str, port: int, name: str) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    _, out = await http(reader, writer, "GET", "/metrics")
    writer.close()
    return "\n".join(line for line in out.decode().splitlines() if line.startswith(name))


async def inside_app(host: str, port: int) -> tuple[float, float]:
    """(seconds, count) the app has spent answering forecasts so far, by its own latency histogram."""
    text = await metric(host, port, "lstmcast_request_seconds_")
    got = {line.split("{")[0]: float(line.split()[-1]) for line in text.splitlines() if 'route="forecast"' in line
           and not line.startswith("lstmcast_request_seconds_bucket")}
    return got.get("lstmcast_request_seconds_sum", 0.0), got.get("lstmcast_request_seconds_count", 0.0)


def soak(host: str, port: int, pid: int, bodies: Bodies, seconds: float) -> dict:
    """8 clients for ``seconds``; the server's RSS at the start (after a warm-up level) and every ~10% after."""
    samples = [rss_mb(pid)]
    step = max(seconds / 10, 0.5)
    errors = 0
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        res = asyncio.run(drive(host, port, 8, bodies, 10**9, min(step, end - time.perf_counter())))
        errors += res["errors"]
        n += res["requests"]
        samples.append(rss_mb(pid))
    return {"seconds": seconds, "requests": n, "errors": errors, "rss_start_mb": samples[0],
            "rss_end_mb": samples[-1], "rss_max_mb": max(samples)}


def in_process(run: Path, frames: list, rounds: int) -> dict:
    """Requests/s (and per-call ms) of Forecaster.predict, the bare forward at B=1 and B=64, and the service's
    batched path (Engine.forecast_many of 64 requests), all in this process on the same windows."""
    import torch

    from lstmcast import Forecaster
    from lstmcast.serve.engine import Engine

    torch.set_num_threads(1)
    fc = Forecaster.load(run)
    engine = Engine(run, threads=1)
    reqs = [engine.check(f, None) for f in frames]
    batch = [reqs[i % len(reqs)] for i in range(64)]
    from lstmcast.data import scaling

    scaler = fc.scaler_
    x = np.stack([scaling.transform(f[["y"]].to_numpy(np.float32), scaler["mean"][0], scaler["std"][0])
                  for f in frames]).astype(np.float32)
    x1 = torch.from_numpy(x[:1])
    x64 = torch.from_numpy(np.concatenate([x] * (64 // len(x) + 1))[:64])
    model = fc.model_

    def timed(fn, n: int) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n

    with torch.inference_mode():
        f1 = timed(lambda: model(x1), rounds * 4)
        f64 = timed(lambda: model(x64), rounds)
    pred = [timed(lambda: fc.predict(frames[0]), rounds) for _ in range(3)]
    cpu0 = time.process_time()
    many = timed(lambda: engine.forecast_many(batch), rounds)
    many_cpu = (time.process_time() - cpu0) / (rounds + 1)
    return {"predict_ms": 1e3 * statistics.median(pred), "predict_req_s": 1 / statistics.median(pred),
            "forward_b1_ms": f1 * 1e3, "forward_b1_req_s": 1 / f1, "forward_b64_ms": f64 * 1e3,
            "forward_b64_req_s": 64 / f64, "batched_path_b64_ms": many * 1e3, "batched_path_req_s": 64 / many,
            "batched_path_cpu_ms_per_req": 1e3 * many_cpu / 64}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer requests per level, a 30 s soak")
    p.add_argument("--smoke", action="store_true", help="a tiny model and a few requests: finishes in seconds")
    p.add_argument("--requests", type=int, default=None, help="requests per level (default 3000; quick 1000)")
    p.add_argument("--seconds", type=float, default=None, help="at most this long per level (default 30)")
    p.add_argument("--soak-s", type=float, default=None, help="soak length in seconds (default 600; quick 30)")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="the server's --max-wait-ms")
    p.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch")
    p.add_argument("--run", type=Path, default=None, help="serve this run instead of training a small one")
    p.add_argument("--stateful", action="store_true", help="a stateful model, update + forecast per request")
    p.add_argument("--server-src", type=Path, default=None,
                   help="run the server from this src folder (e.g. an older version's, `git archive` of a commit)")
    p.add_argument("--against", type=Path, default=None,
                   help="serve this src folder's version beside this one and drive both in turn (--rounds rounds)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of each level with --against")
    a = p.parse_args()
    if a.server_src is not None:
        SERVER_SRC[0] = a.server_src.resolve()
    requests = a.requests or (40 if a.smoke else 1000 if a.quick else 3000)
    seconds = a.seconds or (5.0 if a.smoke else 30.0)
    soak_s = a.soak_s if a.soak_s is not None else (1.0 if a.smoke else 30.0 if a.quick else 600.0)
    if a.against is not None:
        return compare(a.against.resolve(), a.run, a.smoke, a.rounds, requests, seconds, a.max_wait_ms, a.max_batch)
    if a.stateful:
        if a.run is not None:
            raise SystemExit("--stateful trains its own run (its rows must continue the series it was trained on)")
        return stateful_main(a.smoke, requests, seconds, a.max_wait_ms, a.max_batch)
    with tempfile.TemporaryDirectory() as tmp:
        run = a.run or train_run(Path(tmp), a.smoke)
        from lstmcast import Forecaster

        meta = Forecaster.load(run).meta_
        csv = run.parent / "series.csv"
        bodies, frames = request_bodies(csv, meta.window)
        rounds = 5 if a.smoke else 200
        first = in_process(run, frames, rounds)  # before and after the server: the machine's load drifts
        proc, host, port = start_server(run, a.max_wait_ms, a.max_batch)
        try:
            asyncio.run(_wait_ready(host, port))
            rows = levels(host, port, proc.pid, bodies, requests, seconds)
            batches = asyncio.run(metric(host, port, "lstmcast_batch_size_"))
            hz = 50 if a.smoke else 500
            cpu0 = cpu_s(proc.pid)
            round_trip = asyncio.run(healthz_p50(host, port, hz))
            hz_cpu = 1e3 * (cpu_s(proc.pid) - cpu0) / hz
            soaked = soak(host, port, proc.pid, bodies, soak_s)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        second = in_process(run, frames, rounds)
    # the faster of the two in-process runs is the baseline: the stricter comparison
    base, other = (first, second) if first["batched_path_req_s"] >= second["batched_path_req_s"] else (second, first)
    report(rows, base, soaked, batches, code, round_trip)
    print(f"in process, the other run (before / after the server): batched path B=64 {other['batched_path_b64_ms']:.2f}"
          f" ms ({other['batched_path_req_s']:.0f} req/s); Forecaster.predict {other['predict_ms']:.2f} ms")
    print(f"server CPU per GET /healthz (the HTTP layer alone): {hz_cpu:.3f} ms")


def levels(host: str, port: int, pid: int, bodies: Bodies, requests: int, seconds: float) -> list[dict]:
    """A warm-up, then 1, 8 and 64 clients in turn: each level's latency, throughput and CPU per request."""
    asyncio.run(drive(host, port, 8, bodies, 50, 10))  # warm-up: every code path once
    rows = []
    for c in (1, 8, 64):
        before = asyncio.run(inside_app(host, port))
        cpu0, mine0 = cpu_s(pid), time.process_time()
        rows.append(asyncio.run(drive(host, port, c, bodies, requests, seconds)))
        cpu1, mine1 = cpu_s(pid), time.process_time()
        after = asyncio.run(inside_app(host, port))
        rows[-1]["app_ms"] = 1e3 * (after[0] - before[0]) / max(after[1] - before[1], 1)
        rows[-1]["cpu_ms"] = 1e3 * (cpu1 - cpu0) / max(rows[-1]["requests"], 1)
        rows[-1]["client_cpu_ms"] = 1e3 * (mine1 - mine0) / max(rows[-1]["requests"], 1)
    return rows


def stateful_main(smoke: bool, requests: int, seconds: float, max_wait_ms: float, max_batch: int) -> None:
    """The levels with a stateful model: each request one new row of the client's series, update + forecast."""
    with tempfile.TemporaryDirectory() as tmp:
        run, first = train_stateful_run(Path(tmp), smoke)
        rounds = 10 if smoke else 100
        series = 8 if smoke else STATEFUL_SERIES
        before = in_process_stateful(run, [first] * series, rounds)  # on a copy: the server's run is untouched
        proc, host, port = start_server(run, max_wait_ms, max_batch)
        try:
            asyncio.run(_wait_ready(host, port))
            bodies = StatefulBodies([first] * series)
            rows = levels(host, port, proc.pid, bodies, requests, seconds)
            rss = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        after = in_process_stateful(run, bodies.next, rounds)  # from the states the server left
    # the faster of the two in-process runs is the baseline: the stricter comparison
    base, other = (before, after) if before["update_forecast_ms"] <= after["update_forecast_ms"] else (after, before)
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print("stateful model (update + forecast per request, one new row of the client's own series):")
    print("| clients | requests | errors | p50 ms | p99 ms | req/s | mean ms inside the app | server CPU ms per "
          "request | client CPU ms per request | vs in-process update + forecast |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['req_s']:.0f} | {r['app_ms']:.2f} | {r['cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | "
              f"{r['req_s'] / base['update_forecast_req_s']:.2f}x |")
    print(f"in process (a copy of the run): Forecaster.update + save_state + predict_state of one row "
          f"{base['update_forecast_ms']:.2f} ms ({base['update_forecast_req_s']:.0f} rows/s); server RSS {rss:.0f} MB; "
          f"SIGTERM exit {code}")
    print(f"in process, the other run (before / after the server): {other['update_forecast_ms']:.2f} ms")
    print(f"{'met ' if code == 0 and not sum(r['errors'] for r in rows) else 'MISSED'} 0 errors, SIGTERM: exit 0")


def compare(other_src: Path, run: Path | None, smoke: bool, rounds: int, requests: int, seconds: float,
            max_wait_ms: float, max_batch: int) -> None:
    """This version's server and ``other_src``'s, side by side on one run, each level driven on each in turn
    (the order alternating by round): medians of ``rounds`` rounds, so both see the same machine load."""
    with tempfile.TemporaryDirectory() as tmp:
        run = run or train_run(Path(tmp), smoke)
        from lstmcast import Forecaster

        bodies, _ = request_bodies(run.parent / "series.csv", Forecaster.load(run).meta_.window)
        servers = {"before": start_server(run, max_wait_ms, max_batch, other_src),
                   "now": start_server(run, max_wait_ms, max_batch)}
        got: dict[tuple[str, int], list[dict]] = {(v, c): [] for v in servers for c in (1, 8, 64)}
        try:
            for _, host, port in servers.values():
                asyncio.run(_wait_ready(host, port))
                asyncio.run(drive(host, port, 8, bodies, 50, 10))
            for r in range(rounds):
                for c in (1, 8, 64):
                    for version in (("before", "now") if r % 2 == 0 else ("now", "before")):
                        proc, host, port = servers[version]
                        cpu0 = cpu_s(proc.pid)
                        row = asyncio.run(drive(host, port, c, bodies, requests if c > 1 else requests // 2, seconds))
                        row["cpu_ms"] = 1e3 * (cpu_s(proc.pid) - cpu0) / max(row["requests"], 1)
                        got[(version, c)].append(row)
        finally:
            codes = []
            for proc, _, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                codes.append(proc.wait(timeout=60))
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
          f"before = {other_src}; {rounds} rounds, medians")
    print("| clients | version | p50 ms | p99 ms | req/s | server CPU ms per request | errors |")
    print("|---|---|---|---|---|---|---|")
    for c in (1, 8, 64):
        for version in servers:
            rs = got[(version, c)]
            med = {k: statistics.median(x[k] for x in rs) for k in ("p50_ms", "p99_ms", "req_s", "cpu_ms")}
            print(f"| {c} | {version} | {med['p50_ms']:.2f} | {med['p99_ms']:.1f} | {med['req_s']:.0f} | "
                  f"{med['cpu_ms']:.2f} | {sum(x['errors'] for x in rs)} |")
    print(f"SIGTERM exit codes: {codes}")


async def _wait_ready(host: str, port: int) -> None:
    for _ in range(600):
        try:
            reader, writer = await asyncio.open_connection(host, port)
            status, _ = await http(reader, writer, "GET", "/readyz")
            writer.close()
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the server never became ready")


async def healthz_p50(host: str, port: int, n: int) -> float:
    """p50 ms of GET /healthz on one connection: the HTTP round trip without any forecasting."""
    reader, writer = await asyncio.open_connection(host, port)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        await http(reader, writer, "GET", "/healthz")
        lat.append(time.perf_counter() - t0)
    writer.close()
    return 1e3 * float(np.median(lat))


def report(rows: list[dict], base: dict, soaked: dict, batches: str, code: int, round_trip: float) -> None:
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print("| clients | requests | errors | p50 ms | p99 ms | req/s | mean ms inside the app | server CPU ms per "
          "request | client CPU ms per request | vs in-process batched path |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['req_s']:.0f} | {r['app_ms']:.2f} | {r['cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | "
              f"{r['req_s'] / base['batched_path_req_s']:.2f}x |")
    print(f"in process: Forecaster.predict {base['predict_ms']:.2f} ms ({base['predict_req_s']:.0f} req/s); "
          f"forward B=1 {base['forward_b1_ms']:.3f} ms ({base['forward_b1_req_s']:.0f}/s); forward B=64 "
          f"{base['forward_b64_ms']:.3f} ms ({base['forward_b64_req_s']:.0f} windows/s); batched path B=64 "
          f"{base['batched_path_b64_ms']:.2f} ms ({base['batched_path_req_s']:.0f} req/s, CPU "
          f"{base['batched_path_cpu_ms_per_req']:.3f} ms per request)")
    print(f"HTTP round trip alone (GET /healthz, 1 client): p50 {round_trip:.2f} ms")
    seen = [b.split('{')[1].split('}')[0].split('=')[1] + ':' + b.split()[-1] for b in batches.splitlines()
            if '_bucket' in b]
    print(f"batch sizes seen by the server: {' '.join(seen)}")
    print(f"soak {soaked['seconds']:.0f} s at 8 clients: {soaked['requests']} requests, {soaked['errors']} errors, "
          f"server RSS {soaked['rss_start_mb']:.0f} -> {soaked['rss_end_mb']:.0f} MB (max {soaked['rss_max_mb']:.0f})")
    one, many = rows[0], rows[-1]
    checks = {"1 client p50 <= 3 ms": one["p50_ms"] <= 3,
              "64 clients >= 0.5x in-process batched path": many["req_s"] >= 0.5 * base["batched_path_req_s"],
              "64 clients p99 <= 50 ms": many["p99_ms"] <= 50,
              "0 errors": sum(r["errors"] for r in rows) + soaked["errors"] == 0,
              "memory flat (end <= start + 20 MB)": soaked["rss_end_mb"] <= soaked["rss_start_mb"] + 20,
              "SIGTERM: exit 0": code == 0}
    for name, ok in checks.items():
        print(f"{'met ' if ok else 'MISSED'} {name}")


if __name__ == "__main__":
    main()
