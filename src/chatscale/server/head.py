"""What every request and the head of every answer get, in one middleware.

The request id (:mod:`chatscale.server.requestid`: the log context and ``X-Request-ID``), the
security and cache headers (:mod:`chatscale.server.headers`), ``X-Chatscale-Instance`` (which
instance served it: debugging a load balancer, and the multi-instance tests) and the request
metrics (:mod:`chatscale.server.metrics`: status and time to the head). They were a
middleware each, and each wrapped ``send`` in a coroutine of its own and copied the head's
message and header list: a measurable share of a small request's CPU (docs/benchmarks.md,
Durable Streams). Pure ASGI; non-HTTP scopes get the request id only.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatscale import logcontext
from chatscale.server.headers import response_headers
from chatscale.server.metrics import RequestMetrics, ServerMetrics
from chatscale.server.requestid import HEADER, request_id

_INSTANCE = b"x-chatscale-instance"


class ResponseHeadMiddleware:
    """Sets the request id for the request and adds its headers and metrics to the answer."""

    def __init__(self, app: ASGIApp, instance_id: str, metrics: ServerMetrics) -> None:
        self.app = app
        self.instance = (_INSTANCE, instance_id.encode())
        self.metrics = RequestMetrics(metrics)

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
        began = time.perf_counter()
        value = request_id(scope)
        replaced, added = response_headers(scope["path"])
        own = (self.instance, *added, (HEADER, value.encode()))
        status = 500
        head_at = 0.0

        async def send_with_head(message: Message) -> None:
            nonlocal status, head_at
            if message["type"] == "http.response.start":
                status = message["status"]
                head_at = time.perf_counter()
                headers = [h for h in message.get("headers", ()) if h[0].lower() not in replaced]
                headers.extend(own)
                message = {**message, "headers": headers}
            await send(message)

        token = logcontext.request_id.set(value)
        try:
            await self.app(scope, receive, send_with_head)
        finally:
            logcontext.request_id.reset(token)
            self.metrics.observe(scope, status, (head_at or time.perf_counter()) - began)
