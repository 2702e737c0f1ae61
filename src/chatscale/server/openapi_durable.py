"""The OpenAPI description of chat answers read as Durable Streams
(:mod:`chatscale.durable.chat_view`), in ``/openapi.json`` only when ``DURABLE_STREAMS`` is on.

The statuses and headers are those ``chat_view`` answers (``tests/server/test_openapi.py``
holds the statuses to its code). The protocol's own routes (``DURABLE_STREAMS_PATH``) are
described by :mod:`chatscale.server.openapi_protocol`.
"""

from __future__ import annotations

from typing import Any

from chatscale.server.openapi_protocol import ERROR_BODY, SSE_EVENT, TRUE

PATH = "/api/chat/stream/{stream_id}/durable"
#: What ``offset`` accepts: the start (``-1``), the tail (``now``) or an offset of a chat
#: answer, whose byte part is always zero (another byte part is a 400).
OFFSET_QUERY_PATTERN = r"^(-1|now|[0-9]{16}_0{16})$"
#: The offsets the route answers: ``<event seq, 16 digits>_0000000000000000``.
OFFSET_PATTERN = r"^[0-9]{16}_0{16}$"

_NEXT_OFFSET = {
    "description": "The offset to read from next (the tail on HEAD)",
    "schema": {"type": "string", "pattern": OFFSET_PATTERN},
}
_UP_TO_DATE = {"description": "The answer holds nothing after this read (yet)", "schema": TRUE}
_CLOSED = {"description": "The answer has ended: nothing will follow", "schema": TRUE}
_CURSOR = {
    "description": "Long-poll: send it back as `cursor` (the protocol's 20 s intervals)",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_ETAG = {
    "description": "The range read, and whether it closed the stream",
    "schema": {"type": "string", "pattern": '^"[0-9]+:[0-9]+(:c)?"$'},
}

_MESSAGES = {
    "type": "array",
    "description": "The answer's events from the offset on, in order",
    "items": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            "type": {"type": "string"},
            "data": {"type": "object"},
        },
        "required": ["id", "type", "data"],
        "additionalProperties": False,
    },
}

_SSE_DESCRIPTION = (
    "`live=sse`: the protocol's Server-Sent Events: an `event: data` with a JSON array of "
    "messages, then an `event: control` {streamNextOffset, streamCursor, upToDate, "
    "streamClosed}, for each event of the answer; the body ends with the answer's final "
    "event (or after DURABLE_STREAMS_SSE_DURATION: reconnect from the last "
    "streamNextOffset)"
)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_BODY}}}


def _parameters(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        *stream,
        {
            "name": "offset",
            "in": "query",
            "schema": {"type": "string", "pattern": OFFSET_QUERY_PATTERN},
            "description": "Where to read from: `-1` (default) the start, `now` the tail, or a "
            "`Stream-Next-Offset` this route returned (the byte part is always zero)",
        },
        {
            "name": "live",
            "in": "query",
            "schema": {"type": "string", "enum": ["long-poll", "sse"]},
            "description": "Wait for events (long-poll: up to "
            "DURABLE_STREAMS_LONG_POLL_TIMEOUT, then 204) or stream them (sse); needs "
            "`offset` (else 400)",
        },
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string"},
            "description": "The last `Stream-Cursor` (or SSE `streamCursor`) received",
        },
    ]


_ERRORS = {
    "400": _error(
        "A malformed or repeated `offset`, one with a non-zero byte part or past the answer's "
        "end, an unknown `live`, or `live` without `offset`"
    ),
    "403": _error("A resume token that is malformed, forged, expired or for another stream"),
    "404": _error("Unknown (or another session's) stream, or a malformed stream id"),
    "503": _error("Starting up, or Redis unavailable; see Retry-After"),
}


def chat_view_paths(stream: list[dict[str, Any]]) -> dict[str, Any]:
    """The path item of ``GET``/``HEAD /api/chat/stream/{stream_id}/durable``; ``stream``
    holds the stream id and resume token parameters of the chat API's stream routes."""
    parameters = _parameters(stream)
    get = {
        "operationId": "readStreamDurable",
        "summary": "Read an answer as a Durable Stream (JSON mode, read-only): catch-up, "
        "long-poll or SSE",
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "Catch-up or long-poll: a JSON array of messages "
                '{"id", "type", "data"}, one per event of the answer (a final event without '
                f"`text`). {_SSE_DESCRIPTION}",
                "headers": {
                    "Stream-Next-Offset": _NEXT_OFFSET,
                    "Stream-Up-To-Date": _UP_TO_DATE,
                    "Stream-Closed": _CLOSED,
                    "Stream-Cursor": _CURSOR,
                    "ETag": _ETAG,
                },
                "content": {
                    "application/json": {"schema": _MESSAGES},
                    "text/event-stream": {"schema": SSE_EVENT},
                },
            },
            "204": {
                "description": "Long-poll: nothing new within DURABLE_STREAMS_LONG_POLL_TIMEOUT "
                "(with Stream-Cursor), or the answer has ended at the offset (Stream-Closed)",
                "headers": {
                    "Stream-Next-Offset": {**_NEXT_OFFSET, "required": True},
                    "Stream-Up-To-Date": {**_UP_TO_DATE, "required": True},
                    "Stream-Closed": _CLOSED,
                    "Stream-Cursor": _CURSOR,
                },
            },
            **_ERRORS,
            "429": _error(
                "Too many listeners on this stream (REDIS_MAX_LISTENERS); see Retry-After"
            ),
        },
    }
    head = {
        "operationId": "headStreamDurable",
        "summary": "The answer's tail offset and whether it has ended",
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "No body",
                "headers": {
                    "Stream-Next-Offset": {**_NEXT_OFFSET, "required": True},
                    "Stream-Closed": _CLOSED,
                },
            },
            **_ERRORS,
        },
    }
    return {PATH: {"get": get, "head": head}}
