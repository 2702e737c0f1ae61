"""What a log line is about: the request and the answer stream the current task serves.

Context variables, so every log call made while serving a request (or producing a stream)
carries its ids without passing them around; asyncio tasks inherit them from the code that
starts them. :mod:`chatscale.logs` writes them into each line.
"""

from __future__ import annotations

from contextvars import ContextVar

#: The ``X-Request-ID`` of the HTTP request being served (see
#: :class:`chatscale.server.head.ResponseHeadMiddleware`).
request_id: ContextVar[str | None] = ContextVar("chatscale_request_id", default=None)
#: The id of the answer stream (job) being produced.
stream_id: ContextVar[str | None] = ContextVar("chatscale_stream_id", default=None)


def current() -> dict[str, str]:
    """The ids set in this context, by field name (``request_id``, ``stream_id``)."""
    found: dict[str, str] = {}
    for var, name in ((request_id, "request_id"), (stream_id, "stream_id")):
        value = var.get()
        if value is not None:
            found[name] = value
    return found
