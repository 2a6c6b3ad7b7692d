"""The dashboard's ASGI application: pages, the JSON API under ``/api``, ``/metrics``.

Pages are static files (HTML, CSS, vanilla JavaScript, no build step) that
fetch everything from the API and keep up through ``/api/stream``
(server-sent events). The API (documented in docs/dashboard.md):

====================================  ==============================================
``GET  /api/overview``                flows, conductors, claims, waiting and recent jobs, events
``GET  /api/jobs``                    jobs, filtered by ``state`` (repeatable), ``flow``, ``limit``
``GET  /api/jobs/{id}``               one job: masked store, attempts, links, tasks, timeline
``GET  /api/events``                  recent board events (``limit``)
``GET  /api/stream``                  server-sent events: ``board``, ``overview``, ``problem``
``GET  /api/config``                  board label, refresh period, whether admin actions are on
``POST /api/jobs/{id}/cancel``        admin: cancel (``Authorization: Bearer TOKEN``)
``POST /api/jobs/{id}/retry``         admin: post a finished job again (body ``{"again": true}``)
``POST /api/jobs/{id}/trash``         admin: trash an unfinished job (body ``{"reason": "..."}``)
====================================  ==============================================

Every error is a JSON document ``{"error": {"status", "code", "message", "field"?}}``.
Board calls block, so they run in the thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobboard import errors
from jobboard.admin.web import actions
from jobboard.admin.web.hub import Hub
from jobboard.admin.web.jobpage import job_document
from jobboard.admin.web.metrics import CONTENT_TYPE, board_registry, exposition
from jobboard.admin.web.snapshot import BoardReader, job_summary
from jobboard.base import JobBoard, JobState

__all__ = ["STATIC", "ApiError", "create_app"]

log = logging.getLogger(__name__)

#: The pages, styles and scripts.
STATIC = Path(__file__).resolve().parent / "static"
#: Largest request body accepted (admin actions carry a short JSON object).
MAX_BODY = 16 * 1024
#: Most jobs ``/api/jobs`` returns at once.
MAX_LIMIT = 1000
#: Headers on every response: no framing, no inline or foreign scripts, no sniffing.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class ApiError(Exception):
    """Raised by a handler to answer with a JSON error document."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


def _error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status)


def _board_error(err: Exception) -> ApiError:
    """The HTTP answer to a board error."""
    if isinstance(err, errors.JobNotFound):
        return ApiError(404, "not_found", str(err))
    if isinstance(err, errors.InvalidJob):
        return ApiError(400, "invalid", str(err), err.field)
    if isinstance(err, errors.BoardUnavailable | OSError):
        return ApiError(503, "unavailable", f"board unreachable: {err}")
    return ApiError(409, "refused", str(err))


class _SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Dashboard:
    """The handlers, around one board, its reader and its event hub."""

    def __init__(
        self,
        board: JobBoard,
        *,
        label: str,
        admin_token: str | None,
        refresh: float,
        reader: BoardReader | None = None,
    ) -> None:
        self.board = board
        self.label = label
        self.admin_token = admin_token or None
        self.reader = reader or BoardReader(board, label=label)
        self.hub = Hub(self.reader, refresh=refresh)
        self.registry = board_registry(self.reader)
        self.operator = f"operator@web:{socket.gethostname()}"

    # -- pages --------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def job_page(self, request: Request) -> Response:
        return FileResponse(STATIC / "job.html")

    # -- read-only API ------------------------------------------------------

    async def config(self, request: Request) -> Response:
        return JSONResponse(
            {
                "board": self.label,
                "refresh": self.hub.refresh,
                "admin": self.admin_token is not None,
            }
        )

    async def overview(self, request: Request) -> Response:
        try:
            doc = await self.hub.overview()
        except (errors.BoardError, OSError) as err:
            raise _board_error(err) from err
        return JSONResponse(doc)

    async def events(self, request: Request) -> Response:
        limit = _int_param(request, "limit", 50, 1, self.hub.RECENT)
        return JSONResponse({"events": self.hub.recent(limit)})

    async def jobs(self, request: Request) -> Response:
        params = request.query_params
        states: list[str] = []
        for value in params.getlist("state"):
            states += [s.strip() for s in value.split(",") if s.strip()]
        known = [s.value for s in JobState]
        for state in states:
            if state not in known:
                raise ApiError(
                    400, "invalid", f"state {state!r} is not one of {', '.join(known)}", "state"
                )
        flow = params.get("flow") or None
        limit = _int_param(request, "limit", 100, 1, MAX_LIMIT)

        def read() -> dict[str, Any]:
            jobs = list(self.board.iterjobs(states=states or known, flow=flow))
            return {"jobs": [job_summary(j) for j in jobs[:limit]], "total": len(jobs)}

        return JSONResponse(await self._call(read))

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        doc = await self._call(lambda: job_document(self.board, self.reader, job_id))
        return JSONResponse(doc)

    async def metrics(self, request: Request) -> Response:
        body = await run_in_threadpool(exposition, self.registry)
        return Response(body, media_type=CONTENT_TYPE)

    async def stream(self, request: Request) -> Response:
        subscriber = self.hub.subscribe(request.query_params.get("job") or None)

        async def body() -> AsyncIterator[str]:
            try:
                yield f"retry: 2000\nevent: hello\ndata: {json.dumps({'board': self.label})}\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(subscriber.queue.get(), self.hub.KEEPALIVE)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if item is None:
                        return
                    name, data = item
                    yield f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"
            finally:
                self.hub.unsubscribe(subscriber)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    # -- admin API ----------------------------------------------------------

    async def action(self, request: Request) -> Response:
        self._authorise(request)
        name = request.path_params["action"]
        if name not in actions.ACTIONS:
            raise ApiError(404, "not_found", f"no action {name!r}; use cancel, retry or trash")
        body = await _json_body(request)
        job_id = request.path_params["job_id"]
        result = await self._call(
            lambda: actions.ACTIONS[name](self.board, job_id, body, self.operator)
        )
        log.info("dashboard: %s of job %s by %s", name, job_id, self.operator)
        return JSONResponse(result)

    def _authorise(self, request: Request) -> None:
        """Let the request through only with the admin token (compared in constant time)."""
        if self.admin_token is None:
            raise ApiError(
                403,
                "read_only",
                "this dashboard is read-only; start jobboard serve with --admin-token "
                "to allow cancel, retry and trash",
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "admin actions need 'Authorization: Bearer TOKEN'")
        if not hmac.compare_digest(given.strip().encode(), self.admin_token.encode()):
            raise ApiError(403, "forbidden", "wrong admin token")

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """Run a blocking board call in the thread pool; board errors become API errors."""
        try:
            return await run_in_threadpool(fn)
        except (errors.BoardError, OSError) as err:
            raise _board_error(err) from err


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``; a clear error naming it otherwise."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "invalid", f"{name} must be an integer, got {text!r}", name) from None
    if not low <= value <= high:
        raise ApiError(400, "invalid", f"{name} must be from {low} to {high}, got {value}", name)
    return value


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body (empty when there is none)."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", f"request body over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise ApiError(400, "invalid", f"request body is not valid JSON: {err}", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "request body must be a JSON object", "body")
    return body


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error_response(exc.status, exc.code, str(exc), exc.field)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    return _error_response(exc.status_code, codes.get(exc.status_code, "http"), str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("dashboard: %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    return _error_response(500, "internal", "unexpected server error (see the server log)")


def create_app(
    board: JobBoard,
    *,
    label: str = "",
    admin_token: str | None = None,
    refresh: float = 2.0,
    reader: BoardReader | None = None,
) -> Starlette:
    """The dashboard application for an open board (it never closes the board)."""
    dash = Dashboard(board, label=label, admin_token=admin_token, refresh=refresh, reader=reader)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await dash.hub.start()
        try:
            yield
        finally:
            await dash.hub.stop()

    routes = [
        Route("/", dash.index),
        Route("/jobs/{job_id}", dash.job_page),
        Route("/metrics", dash.metrics),
        Route("/api/config", dash.config),
        Route("/api/overview", dash.overview),
        Route("/api/events", dash.events),
        Route("/api/stream", dash.stream),
        Route("/api/jobs", dash.jobs),
        Route("/api/jobs/{job_id}", dash.job),
        Route("/api/jobs/{job_id}/{action}", dash.action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        max_body_size=MAX_BODY * 4,
    )
    app.state.dashboard = dash
    app.add_middleware(_SecurityHeaders)
    return app
