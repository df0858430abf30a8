"""The ASGI application: routes, body limits, the bearer token, time-outs and error answers. POST /v1/forecast is a
bare ASGI endpoint (the route under load); the others are Starlette routes; both share one wrapper (``answer``).

Every error a client can cause is a 4xx JSON body ``{"error": {"type", "message", "exit_code"}}`` carrying the
message the CLI prints for the same data; a 5xx comes only from a fault of the service itself.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from lstmcast.errors import LstmcastError, cut
from lstmcast.serve.answers import forecast_csv, forecast_json
from lstmcast.serve.auth import authorized
from lstmcast.serve.batcher import Batcher
from lstmcast.serve.bodies import UnsupportedType, read_body
from lstmcast.serve.engine import Engine, Table
from lstmcast.serve.engine import Request as Checked
from lstmcast.serve.metrics import Metrics
from lstmcast.serve.state import (
    NOT_STATEFUL,
    ForecasterState,
    GroupSnapshots,
    NotStateful,
    SeriesLocks,
    StateBackend,
    series_ids,
)

log = logging.getLogger(__name__)
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
        self.snapshots = GroupSnapshots(self.backend.snapshot, lambda fn: self._batcher().call(fn))
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
        # the model, torch and pandas (~200k objects) out of the cycle collector's sight: its full collections,
        # which every few thousand requests' short-lived dicts and lists set off, scanned them all (a fifth of a
        # request's CPU); what a request frees is freed by reference counts as before
        gc.collect()
        gc.freeze()
        self.ready = True
        try:
            yield
        finally:
            self.draining, self.ready = True, False
            await self.batcher.stop()
            gc.unfreeze()

    # -- plumbing ------------------------------------------------------------------------------
    def route(self, name: str, handler: Callable[[Request], Awaitable[Response]],
              open_: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` as a Starlette endpoint with ``answer``'s token check, error answers and metrics around it."""
        async def endpoint(request: Request) -> Response:
            answer = await self.answer(name, request.headers, lambda: handler(request), open_)
            return answer if isinstance(answer, Response) else Response(answer, media_type="application/json")
        return endpoint

    async def answer(self, name: str, headers: Mapping[str, str], handle: Callable[[], Awaitable[Response | bytes]],
                     open_: bool = False) -> Response | bytes:
        """``handle()``'s answer (bytes: a 200 JSON body), with the token check, the error answers and the metrics
        around it; every route's one wrapper, the lean forecast route's and Starlette's."""
        t0 = time.perf_counter()
        self.metrics.in_flight += 1
        try:
            if not open_ and not authorized(headers.get("authorization"), self.options.token):
                raise HttpError(401, "Unauthorized", "missing or wrong bearer token: send the header "
                                "'Authorization: Bearer <token>' with the token the service was started with")
            resp = await handle()
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
        code = 200 if isinstance(resp, bytes) else resp.status_code
        self.metrics.request(name, code, time.perf_counter() - t0)
        if code == 401 and isinstance(resp, Response):
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    async def body(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        """The body, refused with 413 past the limit (by Content-Length at once, else while it streams); a client
        gone before it ends is ClientDisconnect (as Starlette's ``Request.stream`` reads it)."""
        limit = self.options.max_body
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(size, limit)
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()

    async def guarded(self, receive: Receive, work: asyncio.Future[Any]) -> Any:
        """``work``'s result, unless the client goes away first (then it is cancelled: a queued forward is
        dropped; ClientDisconnect) or the time-out passes (503). The watch on the connection and the time-out
        start one loop turn later, and only if ``work`` is still pending then: a lone request is usually answered
        in that turn, and a watch (a task reading the connection) cost more than its forward's hand-off."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.timeout
        why: list[Exception] = []
        watch: list[Any] = []

        def stop(exc: Exception) -> None:
            if not work.done():
                why.append(exc)
                work.cancel()

        def gone(task: asyncio.Task[None]) -> None:
            if not task.cancelled():
                task.exception()  # retrieved: a broken connection counts as gone
                stop(ClientDisconnect())

        def start() -> None:
            if work.done():
                return
            task = loop.create_task(_disconnected(receive))
            task.add_done_callback(gone)
            watch.extend((task, loop.call_at(deadline, stop, _timed_out(self.options.timeout))))
        soon = loop.call_soon(start)
        try:
            return await work
        except asyncio.CancelledError:
            if why:
                raise why[0] from None
            raise
        finally:
            soon.cancel()
            for w in watch:
                w.cancel()
            if not work.done():  # this request itself was cancelled: its forward is not needed
                work.cancel()

    def _batcher(self) -> Batcher[Checked, Table]:
        if self.batcher is None:  # requests are refused (not_ready) until the lifespan started it
            raise HttpError(503, "NotReady", "the service is starting: the model is not warm yet")
        return self.batcher

    def not_ready(self) -> None:
        if not self.ready:
            raise HttpError(503, "NotReady", "the service is " + ("shutting down" if self.draining else
                                                                  "starting: the model is not warm yet"))

    # -- routes --------------------------------------------------------------------------------
    async def forecast(self, headers: Mapping[str, str], receive: Receive) -> Response | bytes:
        """POST /v1/forecast: the rows' forecast as JSON bytes (a 200), or a CSV Response for ``Accept: text/csv``."""
        self.not_ready()
        body = await self.body(headers, receive)
        content_type = headers.get("content-type")
        work: asyncio.Future[Any]
        if self.backend.stateful:  # the rows advance the carried states, the forecast starts from them
            rows = self._rows(body, content_type)
            work = asyncio.ensure_future(self._update(rows, forecast=True))
        elif len(body) <= INLINE_BODY:  # checked here, no task: nothing can happen meanwhile
            work = self._batcher().enqueue(self._check(body, content_type))
        else:
            work = asyncio.ensure_future(self._forecast_large(body, content_type))
        try:
            table = await self.guarded(receive, work)
        except LstmcastError as exc:
            raise _user_error(exc) from None
        accept = headers.get("accept")
        if accept and "text/csv" in accept:
            return Response(forecast_csv(table), media_type="text/csv")
        return forecast_json(table)

    async def _forecast_large(self, body: bytes, content_type: str | None) -> Table:
        """A large body's checks off the event loop (a batch waits a few loop turns for them), then its forward."""
        self.arriving += 1
        try:
            checked = await asyncio.to_thread(self._check, body, content_type)
        finally:
            self.arriving -= 1
        return await self._batcher().submit(checked)

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
        body = await self.body(request.headers, request.receive)
        rows = self._rows(body, request.headers.get("content-type"))
        summary = await self.guarded(request.receive, asyncio.ensure_future(self._update(rows)))
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

        def apply() -> tuple[Any, int]:
            summary = self.backend.update(rows)
            n = self.snapshots.applied()
            if forecast:
                return Table.of(self.backend.forecast(ids if self.engine.meta.id_col else None)), n
            return summary, n
        async with self.locks.hold(ids):
            try:
                answer, n = await self._batcher().call(apply)
                await self.snapshots.covering(n)  # written atomically before the caller hears it was applied
            except LstmcastError as exc:
                raise _user_error(exc) from None
        return answer

    async def model(self, request: Request) -> Response:
        return JSONResponse(self.engine.model_info())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        self.not_ready()
        return JSONResponse({"status": "ready"})

    async def prometheus(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")


class ForecastRoute:
    """POST /v1/forecast as a bare ASGI endpoint: the headers it reads taken from the scope, the body from the
    messages and a 200's JSON sent as bytes (Starlette's Request and Response objects cost more than the request's
    own checks); its errors are the same Starlette responses every other route answers with."""

    def __init__(self, service: Service):
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope["headers"])
        answer = await self.service.answer("forecast", headers, lambda: self.service.forecast(headers, receive))
        if isinstance(answer, bytes):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % len(answer)), (b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": answer})
        else:
            await answer(scope, receive, send)


class ServeApp:
    """The ASGI application: POST /v1/forecast, the route under load, goes straight to its endpoint; everything
    else (the other routes, 404, 405, the lifespan) through Starlette's router. ``state.service``: the Service."""

    def __init__(self, forecast: ForecastRoute, router: Starlette):
        self.forecast, self.router, self.state = forecast, router, router.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/forecast" and scope["method"] == "POST":
            await self.forecast(scope, receive, send)
        else:
            await self.router(scope, receive, send)


def create_app(engine: Engine, options: Options, backend: StateBackend | None = None) -> ServeApp:
    """The ASGI app serving ``engine``; ``backend``: the carried state behind POST /v1/update (default: the
    Forecaster's own)."""
    svc = Service(engine, options, backend)
    forecast = ForecastRoute(svc)
    routes = [Route("/v1/forecast", forecast, methods=["POST"]),  # reached only through Starlette's own dispatch
              Route("/v1/update", svc.route("update", svc.update), methods=["POST"]),
              Route("/v1/model", svc.route("model", svc.model), methods=["GET"]),
              Route("/metrics", svc.route("metrics", svc.prometheus), methods=["GET"]),
              Route("/healthz", svc.route("healthz", svc.healthz, open_=True), methods=["GET"]),
              Route("/readyz", svc.route("readyz", svc.readyz, open_=True), methods=["GET"])]
    router = Starlette(routes=routes, lifespan=svc.lifespan)
    router.state.service = svc
    return ServeApp(forecast, router)


_READ_HEADERS = {b"authorization": "authorization", b"content-length": "content-length",
                 b"content-type": "content-type", b"accept": "accept"}


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers the forecast route reads, each its first occurrence as Starlette's ``Headers.get`` gives it (the
    server lower-cases the names)."""
    got: dict[str, str] = {}
    for name, value in raw:
        key = _READ_HEADERS.get(name)
        if key is not None and key not in got:
            got[key] = value.decode("latin-1")
    return got


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has gone (the body is read, so the next message is the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _timed_out(timeout: float) -> HttpError:
    return HttpError(503, "Timeout", f"no answer within {timeout:g} s (the service is overloaded or the request is "
                     "very large): retry later or send fewer rows")


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
