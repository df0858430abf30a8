"""The ASGI application (Starlette): routes, body limits, the bearer token, time-outs and error answers.

Every error a client can cause is a 4xx JSON body ``{"error": {"type", "message", "exit_code"}}`` carrying the
message the CLI prints for the same data; a 5xx comes only from a fault of the service itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from lstmcast.errors import LstmcastError, cut
from lstmcast.serve.auth import authorized
from lstmcast.serve.batcher import Batcher
from lstmcast.serve.bodies import UnsupportedType, read_body
from lstmcast.serve.engine import Engine, Table
from lstmcast.serve.engine import Request as Checked
from lstmcast.serve.metrics import Metrics
from lstmcast.serve.state import (
    NOT_STATEFUL,
    ForecasterState,
    NotStateful,
    SeriesLocks,
    StateBackend,
    series_ids,
)

log = logging.getLogger(__name__)
_ENCODE_TEXT = json.encoder.encode_basestring_ascii  # json.dumps' own string encoder (ensure_ascii)
INLINE_BODY = 256 * 1024  # larger bodies are parsed and checked off the event loop


@dataclass
class Options:
    max_body: int = 4 * 1024 * 1024  # bytes; 413 beyond
    timeout: float = 30.0  # seconds from a request's arrival to its answer; 503 beyond
    max_batch: int = 64
    max_wait: float = 0.0  # seconds a lone request may wait for others to join its forward
    token: str | None = None


class HttpError(Exception):
    """An answer other than 200: its status code, the error's type name, the message and the CLI's exit code for
    the same error (None where the CLI has no such case)."""

    def __init__(self, code: int, kind: str, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.code, self.kind, self.message, self.exit_code = code, kind, message, exit_code


class Service:
    """The routes' shared state: the engine, the batcher, the update locks and the metrics."""

    def __init__(self, engine: Engine, options: Options, backend: StateBackend | None = None):
        self.engine, self.options = engine, options
        self.backend = backend if backend is not None else ForecasterState(engine.fc)
        self.locks = SeriesLocks()
        self.batcher: Batcher[Checked, Table] | None = None
        self.metrics = Metrics(lambda: self.batcher.depth if self.batcher else 0)
        self.ready = False
        self.draining = False
        self.arriving = 0  # forecast requests read but not yet queued for a forward

    # -- life ----------------------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.batcher = Batcher(self.engine.forecast_many, self.options.max_batch, self.options.max_wait,
                               initializer=self.engine.set_threads, on_batch=self.metrics.batch,
                               arriving=lambda: self.arriving)
        self.engine.set_threads()  # lone requests run on this thread, batches on the batcher's
        self.batcher.start()
        seconds = await self.batcher.call(self.engine.warm_up)
        log.info("warm forward in %.1f ms: ready", seconds * 1e3)
        self.ready = True
        try:
            yield
        finally:
            self.draining, self.ready = True, False
            await self.batcher.stop()

    # -- plumbing ------------------------------------------------------------------------------
    def route(self, name: str, handler: Callable[[Request], Awaitable[Response]],
              open_: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` with the token check, error answers, the time-out and the metrics around it."""
        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            self.metrics.in_flight += 1
            try:
                if not open_ and not authorized(request.headers.get("authorization"), self.options.token):
                    raise HttpError(401, "Unauthorized", "missing or wrong bearer token: send the header "
                                    "'Authorization: Bearer <token>' with the token the service was started with")
                resp = await handler(request)
            except HttpError as exc:
                resp = _error(exc.code, exc.kind, exc.message, exc.exit_code)
            except ClientDisconnect:
                resp = Response(status_code=499)  # nobody reads it: counted, nothing computed
            except Exception:  # a bug of the service, never the client's data: 500, logged
                log.exception("%s failed", name)
                resp = _error(500, "InternalError", "the service failed on this request (a bug in lstmcast): "
                              "see the server log")
            finally:
                self.metrics.in_flight -= 1
            self.metrics.request(name, resp.status_code, time.perf_counter() - t0)
            if resp.status_code == 401:
                resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return endpoint

    async def body(self, request: Request) -> bytes:
        """The body, refused with 413 past the limit (by Content-Length at once, else while it streams)."""
        limit = self.options.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def guarded(self, request: Request, work: Awaitable[Any]) -> Any:
        """``work``'s result, unless the client goes away first (then it is cancelled: a queued forward is
        dropped) or the time-out passes (503)."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({task, gone}, timeout=self.options.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if task in done:
            return task.result()
        task.cancel()
        if gone in done:
            raise ClientDisconnect()
        raise HttpError(503, "Timeout", f"no answer within {self.options.timeout:g} s (the service is "
                        "overloaded or the request is very large): retry later or send fewer rows")

    def _batcher(self) -> Batcher[Checked, Table]:
        if self.batcher is None:  # requests are refused (not_ready) until the lifespan started it
            raise HttpError(503, "NotReady", "the service is starting: the model is not warm yet")
        return self.batcher

    def not_ready(self) -> None:
        if not self.ready:
            raise HttpError(503, "NotReady", "the service is " + ("shutting down" if self.draining else
                                                                  "starting: the model is not warm yet"))

    # -- routes --------------------------------------------------------------------------------
    async def forecast(self, request: Request) -> Response:
        self.not_ready()
        body = await self.body(request)
        if self.backend.stateful:  # the rows advance the carried states, the forecast starts from them
            rows = self._rows(body, request.headers.get("content-type"))
            frame = await self.guarded(request, self._update(rows, forecast=True))
        else:
            frame = await self.guarded(request, self._forecast(body, request.headers.get("content-type")))
        return _table_response(frame, request.headers.get("accept"))

    async def _forecast(self, body: bytes, content_type: str | None) -> Table:
        self.arriving += 1
        try:
            checked = await self._offload(len(body), self._check, body, content_type)
        finally:
            self.arriving -= 1
        try:
            return await self._batcher().submit(checked)
        except LstmcastError as exc:
            raise _user_error(exc) from None

    def _check(self, body: bytes, content_type: str | None) -> Checked:
        cfg = self.engine.config.data
        try:
            tables = read_body(body, content_type, self.engine.meta, cfg.delimiter, cfg.decimal)
            return self.engine.check_tables(tables)
        except LstmcastError as exc:
            raise _user_error(exc) from None
        except (ValueError, TypeError, OverflowError, KeyError) as exc:  # the data broke a reader: still its 400
            log.warning("a request's data failed the checks with %s (a gap in lstmcast's validation)",
                        type(exc).__name__, exc_info=True)
            raise HttpError(400, "DataError", f"the rows could not be read: {type(exc).__name__}: "
                            f"{cut(str(exc), 200)}", 3) from None

    async def update(self, request: Request) -> Response:
        self.not_ready()
        if not self.backend.stateful:
            raise HttpError(409, "NotStateful", NOT_STATEFUL, 2)
        body = await self.body(request)
        rows = self._rows(body, request.headers.get("content-type"))
        summary = await self.guarded(request, self._update(rows))
        return JSONResponse({"updated": summary})

    def _rows(self, body: bytes, content_type: str | None) -> pd.DataFrame:
        cfg = self.engine.config.data
        try:
            return read_body(body, content_type, self.engine.meta, cfg.delimiter, cfg.decimal).rows
        except LstmcastError as exc:
            raise _user_error(exc) from None

    async def _update(self, rows: pd.DataFrame, forecast: bool = False) -> Any:
        """Apply ``rows`` to the carried states under their series' locks; the update's summary, or with
        ``forecast`` the forecast of those series from their new states (update + forecast, one request)."""
        ids = series_ids(rows, self.engine.meta.id_col)

        def apply() -> Any:
            summary = self.backend.update(rows)
            self.backend.snapshot()  # atomically, before the caller hears it was applied
            if forecast:
                return Table.of(self.backend.forecast(ids if self.engine.meta.id_col else None))
            return summary
        async with self.locks.hold(ids):
            try:
                return await self._batcher().call(apply)
            except LstmcastError as exc:
                raise _user_error(exc) from None

    async def model(self, request: Request) -> Response:
        return JSONResponse(self.engine.model_info())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        self.not_ready()
        return JSONResponse({"status": "ready"})

    async def prometheus(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def _offload(self, size: int, fn: Callable[..., Any], *args: Any) -> Any:
        if size <= INLINE_BODY:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)


def create_app(engine: Engine, options: Options, backend: StateBackend | None = None) -> Starlette:
    """The ASGI app serving ``engine``; ``backend``: the carried state behind POST /v1/update (default: the
    Forecaster's own)."""
    svc = Service(engine, options, backend)
    routes = [Route("/v1/forecast", svc.route("forecast", svc.forecast), methods=["POST"]),
              Route("/v1/update", svc.route("update", svc.update), methods=["POST"]),
              Route("/v1/model", svc.route("model", svc.model), methods=["GET"]),
              Route("/metrics", svc.route("metrics", svc.prometheus), methods=["GET"]),
              Route("/healthz", svc.route("healthz", svc.healthz, open_=True), methods=["GET"]),
              Route("/readyz", svc.route("readyz", svc.readyz, open_=True), methods=["GET"])]
    app = Starlette(routes=routes, lifespan=svc.lifespan)
    app.state.service = svc
    return app


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is read, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _user_error(exc: LstmcastError) -> HttpError:
    kind = type(exc).__name__
    if isinstance(exc, UnsupportedType):
        return HttpError(415, kind, str(exc), exc.exit_code)
    if isinstance(exc, NotStateful):
        return HttpError(409, kind, str(exc), exc.exit_code)
    # the request's data or options (exit 2 / 3 in the CLI); a broken run folder (4) is the service's fault
    return HttpError(400 if exc.exit_code in (2, 3) else 500, kind, str(exc), exc.exit_code)


def _too_large(size: int, limit: int) -> HttpError:
    return HttpError(413, "TooLarge", f"the body has {size} bytes, more than this service's limit of {limit}: send "
                     "fewer rows (only the last `window` rows of each series are needed) or start the service with "
                     "a larger --max-body")


def _error(code: int, kind: str, message: str, exit_code: int | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, "exit_code": exit_code}}, status_code=code)


def _table_response(table: Table, accept: str | None) -> Response:
    """The forecast rows as predict lays them out: JSON records (times as predict's CSV writes them) or CSV."""
    if accept and "text/csv" in accept:
        return Response(table.frame().to_csv(index=False), media_type="text/csv")
    return Response(forecast_json(table), media_type="application/json")


def forecast_json(table: Table) -> bytes:
    """``{"forecast": [records]}`` exactly as ``json.dumps`` writes it, the records' text formatted column by column
    (json.dumps of the records was half the answer's cost); a column of other values (NaN, mixed objects) takes
    json.dumps itself."""
    values = [_json_column(a) for a in table.arrays]
    cells = [_json_cells(a, v) for a, v in zip(table.arrays, values)]
    if any(c is None for c in cells) or not table.columns:
        records = [dict(zip(table.columns, row)) for row in zip(*values)]
        return json.dumps({"forecast": records}, allow_nan=False).encode()
    row = "{" + ", ".join(_ENCODE_TEXT(str(c)).replace("%", "%%") + ": %s" for c in table.columns) + "}"
    return ('{"forecast": [' + ", ".join(row % r for r in zip(*cells)) + "]}").encode()


def _json_cells(array: np.ndarray, values: list[Any]) -> list[str] | None:
    """A column's values as JSON text, or None where json.dumps must decide (non-finite numbers, mixed objects)."""
    kind = array.dtype.kind
    if kind == "f":
        return list(map(float.__repr__, values)) if np.isfinite(array).all() else None
    if kind in "iu":
        return list(map(int.__repr__, values))
    if all(type(v) is str for v in values):  # times as text, ids
        return list(map(_ENCODE_TEXT, values))
    return None


def _json_column(values: np.ndarray) -> list[Any]:
    """A column as JSON values; naive times as predict's CSV writes them ("2024-01-13 12:00:00")."""
    if values.dtype.kind == "M":
        stamps = values.astype("datetime64[ns]")
        if not (stamps.view(np.int64) % 1_000_000_000).any():  # whole seconds: numpy formats them 10x faster
            return [t.replace("T", " ") for t in np.datetime_as_string(stamps, unit="s").tolist()]
        return pd.Series(values).astype(str).tolist()
    if values.dtype.kind == "O":  # ids, or zoned times (pandas Timestamps)
        return [v if isinstance(v, (str, int, float)) or v is None else str(v) for v in values.tolist()]
    return values.tolist()
