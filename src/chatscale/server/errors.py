"""Every error the API answers is JSON ``{"error": "..."}`` (with ``fields`` naming the
invalid inputs of a 422); nothing escapes as a bare 500."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatscale.db.errors import TRANSIENT_DB_ERRORS
from chatscale.errors import RedisUnavailableError

log = logging.getLogger("chatscale.server")

#: Errors of a backend (Redis, the database) that a retry will likely get past: 503.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisError,
    RedisUnavailableError,
    ConnectionError,
    TimeoutError,
    *TRANSIENT_DB_ERRORS,
)


#: One invalid input of a request: where it is (``["body", "temperature"]``,
#: ``["header", "Idempotency-Key"]``) and what is wrong with it.
FieldError = dict[str, Any]


class ApiError(Exception):
    """An error answer: HTTP status, a readable message, optional headers, and for invalid
    input the ``fields`` at fault (``{"loc": [...], "msg": "..."}`` each)."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        fields: list[FieldError] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.fields = fields


def error_response(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    fields: list[FieldError] | None = None,
) -> Response:
    """The JSON body every error has: ``{"error"}``, plus ``fields`` for invalid input."""
    body: dict[str, Any] = {"error": message}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse(body, status_code=status, headers=headers)


async def api_error(request: Request, exc: Exception) -> Response:
    """Handler of :class:`ApiError`."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers, fields=exc.fields)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404 route, 405 method...) as JSON."""
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, message, headers)


def _allowed_methods(request: Request) -> str:
    """Every method of the path: Starlette's 405 names only those of the first route
    matching it, and one path may have a route per method."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


class CatchAllMiddleware:
    """The last line: log any exception and answer a JSON 500 (if nothing was sent yet).

    Starlette's own handler re-raises after answering, and uvicorn then closes the
    connection, which can cut the answer off; this one keeps the connection healthy.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            response = failure_response(scope, exc, started)
            if response is not None:
                await response(scope, receive, send)


def failure_response(scope: Scope, exc: Exception, started: bool) -> Response | None:
    """The answer to a request whose application raised ``exc`` (logged here): a JSON 503
    for a backend failing over or unreachable, a JSON 500 for anything else; ``None`` when
    there is nobody to answer (the client left while sending) or the head went out already
    (``started``: the client sees a cut answer)."""
    if isinstance(exc, ClientDisconnect):
        return None
    if isinstance(exc, _UNAVAILABLE):
        # Redis or the database failing over or unreachable: a retry (here or elsewhere)
        # will do.
        log.warning("backend unavailable on %s %s: %r", scope.get("method"), scope.get("path"), exc)
        if started:
            return None
        return error_response(503, "storage temporarily unavailable; retry", {"Retry-After": "1"})
    log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
    if started:
        return None
    return error_response(500, "internal error; the server log has the details")
