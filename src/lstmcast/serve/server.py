"""`lstmcast serve RUN`: load and verify the run, warm the model, serve it with uvicorn until SIGTERM / SIGINT.

The run folder is read once at start (every file's sha256 checked by ``lstmcast.load``: a tampered run stops here
with exit 4, before any port is opened) and never again; no route reads or writes a path a client names.
SIGTERM and SIGINT stop accepting connections, let the requests in flight finish (the batcher drains its
queue), then return 0.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

import uvicorn

from lstmcast.errors import ConfigError
from lstmcast.serve.app import Options, create_app
from lstmcast.serve.auth import load_token
from lstmcast.serve.engine import Engine

log = logging.getLogger(__name__)
GRACE_S = 30  # seconds in-flight requests get to finish after SIGTERM


def serve(run: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000,
          token_file: str | os.PathLike[str] | None = None, options: Options | None = None,
          threads: int | None = None, announce: Callable[[str], None] | None = None) -> int:
    """Serve ``run`` until a signal; returns the exit code (0 after a drained shutdown). The token: ``options.token``,
    else read from ``token_file`` / the environment. ``announce`` is told the address once the port is bound
    (``--port 0`` picks a free one)."""
    options = options or Options()
    if options.token is None:
        options.token = load_token(token_file, host)  # ConfigError (exit 2) before the model is loaded
    engine = Engine(run, threads)  # CheckpointError (exit 4) on a tampered run
    app = create_app(engine, options)
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
                            access_log=False, log_level="warning", timeout_graceful_shutdown=GRACE_S,
                            server_header=False, date_header=False)
    try:
        sock = config.bind_socket()  # here, not in uvicorn: its bind failure is sys.exit(1)
    except (OSError, SystemExit) as exc:  # uvicorn logs the OSError, then exits
        why = exc if isinstance(exc, OSError) else "in use or not an address of this machine"
        raise ConfigError(f"cannot listen on {host}:{port} ({why}): choose another --port or --host") from None
    if announce is not None:
        bound = sock.getsockname()
        announce(f"http://{host if ':' not in host else '[' + host + ']'}:{bound[1]}")
    server = uvicorn.Server(config)
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # uvicorn re-raises the signal it drained on: noted here, not fatal
    previous = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        log.info("stopped by signal %d after draining the requests in flight", received[0])
    elif not server.started:  # the start-up failed after the run loaded (uvicorn logged why): not a clean exit
        raise RuntimeError("the service stopped during its start-up: see the log lines above")
    return 0
