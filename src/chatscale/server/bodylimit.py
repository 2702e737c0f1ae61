"""Request bodies: bounded in size and in time while they are read, on every route.

The bound is checked on the declared ``Content-Length`` first and then on the bytes as they
arrive (chunked bodies have no length), so nothing past it is ever buffered: the client gets
a JSON 413 with ``Connection: close`` and the application sees a disconnect. A body that
does not arrive within ``timeout_s`` (slow-loris) gets a JSON 408 the same way. A body that
the route never reads is not waited for: its answer closes the connection instead of letting
the server drain whatever the client keeps sending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatscale.numbers import parse_whole
from chatscale.server.errors import error_response

_CLOSE = (b"connection", b"close")
#: How long a refused request's remaining bytes are read and dropped before closing.
LINGER_S = 1.0
_DISCONNECT: Message = {"type": "http.disconnect"}
#: Set in a request's scope by the server's protocol once the whole body is buffered
#: (:class:`chatscale.server.protocol.GuardedHttpToolsProtocol`): reading it cannot be slow,
#: so it is read without a timeout. Most bodies come with their headers.
BODY_RECEIVED = "chatscale.body_received"


@dataclass(frozen=True)
class BodyBound:
    """The largest body a request may send, and the setting that decides it."""

    max_bytes: int
    setting: str


class BodyLimitMiddleware:
    """Pure ASGI middleware; ``bound_for(scope)`` gives each request's :class:`BodyBound`."""

    def __init__(
        self, app: ASGIApp, bound_for: Callable[[Scope], BodyBound], timeout_s: float
    ) -> None:
        self.app = app
        self.bound_for = bound_for
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, has_body = declared(scope)
        if not has_body:
            # Nothing to bound or wait for, and no unread body to close the connection on.
            await self.app(scope, receive, send)
            return
        request = _Request(scope, receive, send, self.bound_for(scope), self.timeout_s)
        await request.run(self.app, length)


def settled(scope: Scope, bound: BodyBound) -> bool:
    """Whether the request needs no watching: it has no body, or its whole body has
    arrived (:data:`BODY_RECEIVED`) with a declared length within ``bound``."""
    length, has_body = declared(scope)
    if not has_body:
        return True
    return length is not None and length <= bound.max_bytes and BODY_RECEIVED in scope


def declared(scope: Scope) -> tuple[int | None, bool]:
    """The request's ``Content-Length`` (None when absent or unreadable) and whether it
    announces a body at all (a length above 0, or a ``Transfer-Encoding``)."""
    length: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            # Any length of 1,000 digits is over every bound; the HTTP server has checked
            # the header's form already.
            length = parse_whole(value.strip(), max_digits=1000)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked or bool(length)


class _Request:
    def __init__(
        self, scope: Scope, receive: Receive, send: Send, bound: BodyBound, timeout_s: float
    ) -> None:
        self.scope = scope
        self.inner_receive = receive
        self.inner_send = send
        self.bound = bound
        self.timeout_s = timeout_s
        self.received = 0
        self.complete = False
        self.started = False
        self.answered = False  # this middleware answered; the app's own answer is dropped
        self.over = False  # more than the bound arrived
        self.deadline = 0.0

    async def run(self, app: ASGIApp, length: int | None) -> None:
        if length is not None and length > self.bound.max_bytes:
            await self._answer(413, self._too_large())
            return
        self.deadline = asyncio.get_running_loop().time() + self.timeout_s
        await app(self.scope, self.receive, self.send)

    def _too_large(self) -> str:
        bound = self.bound
        return f"request body too large: more than {bound.max_bytes} bytes ({bound.setting})"

    async def receive(self) -> Message:
        if self.answered:
            return _DISCONNECT
        if self.complete or BODY_RECEIVED in self.scope:
            message = await self.inner_receive()
        else:
            remaining = self.deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    message = await self.inner_receive()
            except TimeoutError:
                await self._answer(
                    408,
                    f"request body not received within {self.timeout_s:g} s (REQUEST_BODY_TIMEOUT)",
                )
                return _DISCONNECT
        message = self._counted(message)
        if self.over:
            await self._answer(413, self._too_large())
            return _DISCONNECT
        return message

    def _counted(self, message: Message) -> Message:
        if message["type"] != "http.request" or self.complete:
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.bound.max_bytes:
            self.over = True
        elif not message.get("more_body", False):
            self.complete = True
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
            if not self.complete:
                # The rest of the body would be read and thrown away on a kept-alive
                # connection, for as long as the client cares to send it.
                message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
        await self.inner_send(message)

    async def _answer(self, status: int, error: str) -> None:
        if self.started:
            return  # too late for a status: the disconnect ends the app's answer
        self.answered = True
        response = error_response(status, error, {"Connection": "close"})
        await self.inner_send(
            {"type": "http.response.start", "status": status, "headers": response.raw_headers}
        )
        await self.inner_send(
            {"type": "http.response.body", "body": response.body, "more_body": True}
        )
        await self._linger()
        await self.inner_send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _linger(self) -> None:
        # Closing a socket with unread data resets the connection, and the reset can destroy
        # the answer before the client reads it: drop what it is still sending for a moment.
        if self.complete:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_S):
                while True:
                    message = await self.inner_receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return
