"""What every request and the head of every answer get.

The request id (:mod:`chatscale.server.requestid`: the log context and ``X-Request-ID``), the
security and cache headers (:mod:`chatscale.server.headers`), ``X-Chatscale-Instance`` (which
instance served it: debugging a load balancer, and the multi-instance tests) and the request
metrics (:mod:`chatscale.server.metrics`: status and time to the head). One request's share
of them is a :class:`Head`; :class:`ResponseHeadMiddleware` gives one to every request, and
the Durable Streams lane (:mod:`chatscale.server.lane`) puts it on its answers without a
wrapper of ``send``. Pure ASGI; non-HTTP scopes get the request id only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatscale import logcontext
from chatscale.server.headers import response_headers
from chatscale.server.metrics import RequestMetrics, ServerMetrics
from chatscale.server.protocol import header_lines, refused
from chatscale.server.requestid import HEADER, request_id

if TYPE_CHECKING:
    from chatscale.server.express import Prepared

_INSTANCE = b"x-chatscale-instance"
_ID_LINE = HEADER + b": %b\r\n"
RawHeaders = Iterable[tuple[bytes, bytes]]


class Head:
    """One HTTP request's part of its answer's head: the request id, the headers every
    answer gets, and when the head went out with which status (for the metrics).

    :meth:`send` is ``send`` with these headers put on the head; an application that sends
    its head itself builds it with :meth:`headers` and says so with :meth:`started`."""

    __slots__ = ("_send", "began", "head_at", "own", "replaced", "request_id", "status")

    def __init__(self, scope: Scope, instance: tuple[bytes, bytes], send: Send) -> None:
        self.began = time.perf_counter()
        self.request_id = request_id(scope)
        self.replaced, added = response_headers(scope["path"])
        self.own = (instance, *added, (HEADER, self.request_id.encode()))
        #: 500 until a head goes out: an answer that never started counts as failed.
        self.status = 500
        self.head_at = 0.0
        self._send = send

    def headers(self, app_headers: RawHeaders) -> list[tuple[bytes, bytes]]:
        """The application's headers, less those the common ones replace, and the common
        ones."""
        replaced = self.replaced
        headers = [h for h in app_headers if h[0].lower() not in replaced]
        headers.extend(self.own)
        return headers

    def started(self, status: int) -> None:
        """The head went out now with ``status``."""
        self.status = status
        self.head_at = time.perf_counter()

    @property
    def seconds(self) -> float:
        """From the request to its head (to now if none went out)."""
        return (self.head_at or time.perf_counter()) - self.began

    async def send(self, message: Message) -> None:
        """``send``, the head getting :meth:`headers`."""
        if message["type"] == "http.response.start":
            self.started(message["status"])
            message = {**message, "headers": self.headers(message.get("headers", ()))}
        await self._send(message)


class ResponseHeads:
    """Makes each request's :class:`Head` and records its metrics when it is answered."""

    def __init__(self, instance_id: str, metrics: ServerMetrics) -> None:
        self.instance = (_INSTANCE, instance_id.encode())
        self.metrics = RequestMetrics(metrics)
        self._blocks: dict[tuple[object, ...], bytes] = {}

    def lines(self, scope: Scope, answer: Prepared) -> bytes:
        """The header lines of ``answer`` with those every answer gets (what a :class:`Head`
        gives its headers, in another order), for an answer written whole without a
        :class:`Head`: the headers the same on every answer of its class and path (its
        ``common`` ones, the instance's and the security headers) joined and checked once.
        ``ValueError`` when one of the answer's own has a byte uvicorn would refuse (the
        request id has none: see :mod:`chatscale.server.requestid`)."""
        replaced, added = response_headers(scope["path"])
        own = answer.own_lines(replaced) + _ID_LINE % request_id(scope).encode()
        common = answer.common
        key = (common, replaced, added)
        block = self._blocks.get(key)
        if block is None:
            constant = [h for h in common if h[0] not in replaced]
            constant.append(self.instance)
            constant.extend(added)
            if refused(constant):
                raise ValueError(f"a common header has a byte not allowed: {constant!r}")
            block = self._blocks[key] = header_lines(constant)
        return own + block

    def head(self, scope: Scope, send: Send) -> Head:
        """The :class:`Head` of an HTTP request."""
        return Head(scope, self.instance, send)

    def done(self, scope: Scope, head: Head) -> None:
        """The request is answered (or failed): count and time it."""
        self.metrics.observe(scope, head.status, head.seconds)


class ResponseHeadMiddleware:
    """Sets the request id for the request and adds its headers and metrics to the answer."""

    def __init__(self, app: ASGIApp, instance_id: str, metrics: ServerMetrics) -> None:
        self.app = app
        self.heads = ResponseHeads(instance_id, metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind != "websocket":
                await self.app(scope, receive, send)
                return
            token = logcontext.request_id.set(request_id(scope))
            try:
                await self.app(scope, receive, send)
            finally:
                logcontext.request_id.reset(token)
            return
        head = self.heads.head(scope, send)
        token = logcontext.request_id.set(head.request_id)
        try:
            await self.app(scope, receive, head.send)
        finally:
            logcontext.request_id.reset(token)
            self.heads.done(scope, head)
