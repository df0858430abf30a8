"""A tiny saved run and a real uvicorn serving it on a free loopback port, started and stopped inside a test (in a
thread of the test process, so a test can hand the app its own state backend); shared by the serve tests."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from lstmcast import Forecaster
from lstmcast.serve.app import Options, create_app
from lstmcast.serve.engine import Engine
from lstmcast.serve.state import StateBackend
from tests.conftest import seasonal_frame, small_config


def save_tiny_run(d: Path) -> Path:
    """``d/run``: one hourly series (window 24, horizon 6, hidden 16), one epoch; its data in ``d/series.csv``."""
    frame = seasonal_frame(300)
    frame.to_csv(d / "series.csv", index=False)
    cfg = small_config(train={"precision": "fp32", "max_epochs": 1})
    Forecaster(cfg).fit(frame, progress=False).save(d / "run", outputs=False)
    return d / "run"


class Served:
    """A running service: its port, the app's Service object, and a small HTTP client."""

    def __init__(self, port: int, service: Any):
        self.port, self.service = port, service

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        kind = resp.getheader("content-type") or ""
        return resp.status, json.loads(data) if kind.startswith("application/json") else data.decode()

    def post_json(self, path: str, doc: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return self.request("POST", path, json.dumps(doc), {"Content-Type": "application/json", **(headers or {})})

    def metric(self, name: str) -> float:
        _, text = self.request("GET", "/metrics", headers=self.auth())
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith((name + " ", name + "{")))

    def auth(self) -> dict[str, str]:
        token = self.service.options.token
        return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def serving(engine: Engine, options: Options | None = None, backend: StateBackend | None = None) -> Iterator[Served]:
    """uvicorn serving ``engine`` on 127.0.0.1 and a free port until the block ends (then drained and stopped)."""
    app = create_app(engine, options or Options(), backend)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="asyncio", http="httptools", lifespan="on",
                            access_log=False, log_level="warning")
    sock = config.bind_socket()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    svc = app.state.service
    deadline = time.monotonic() + 60
    while not (server.started and svc.ready):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Served(sock.getsockname()[1], svc)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
