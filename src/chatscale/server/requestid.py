"""``X-Request-ID``: every request gets an id, echoed in its answer and in its log lines."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatscale import logcontext

HEADER = b"x-request-id"
# A proxy's id is kept when it is short and plain; anything else could forge log lines.
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    """Sets :data:`chatscale.logcontext.request_id` for the request (the ``X-Request-ID``
    a proxy sent, or a new one) and adds it to the response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == HEADER), None)
        raw = given if given is not None and _ACCEPTED.fullmatch(given) else None
        value = raw.decode() if raw is not None else uuid.uuid4().hex
        header = (HEADER, value.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        token = logcontext.request_id.set(value)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logcontext.request_id.reset(token)
