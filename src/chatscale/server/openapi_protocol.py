"""The OpenAPI description of the Durable Streams protocol's own routes
(:mod:`chatscale.durable.http`, ``{DURABLE_STREAMS_PATH}/{name}``), in ``/openapi.json``
only when ``DURABLE_STREAMS`` is on, at the configured base path.

Every status and header here is one the code answers (``tests/server/test_openapi.py``
holds the statuses to the protocol's code, ``tests/durable/test_protocol_openapi.py`` real
answers to the document). The protocol's specification (ElectricSQL, version 1.0) says what
they mean; docs/durable-streams.md what chatscale supports of it.
"""

from __future__ import annotations

from typing import Any

#: The name of the bearer token scheme in ``components.securitySchemes``.
SCHEME = "durableStreamsToken"
#: An offset as the server writes it: appends before the position, ``_``, bytes before it.
OFFSET_PATTERN = r"^[0-9]{16}_[0-9]{16}$"
#: What the ``offset`` query parameter accepts: the start, the tail, or an offset.
OFFSET_QUERY_PATTERN = r"^(-1|now|[0-9]{16}_[0-9]{16})$"
#: ``Stream-Fork-Offset``: the source's start (``-1``) or an offset of it.
FORK_OFFSET_PATTERN = r"^(-1|[0-9]{16}_[0-9]{16})$"
#: Whole numbers as the producer headers take them (at most 2^53-1, else 400).
UINT_PATTERN = r"^(0|[1-9][0-9]{0,15})$"
#: ``Stream-TTL``: whole seconds without sign, leading zeros or decimals (at most ten years).
TTL_PATTERN = r"^(0|[1-9][0-9]{0,9})$"
#: ``Stream-Expires-At``: RFC 3339 (a date that does not exist is still a 400).
EXPIRES_AT_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
#: ``Stream-Closed`` (and the other flags): true or false, in any case, blanks around.
FLAG_PATTERN = r"^\s*([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])\s*$"
#: A stream's ``ETag``: its id, the range read, and ``:c`` when that range closed it.
ETAG_PATTERN = r'^"[0-9a-f]+:[0-9]{16}_[0-9]{16}:[0-9]{16}_[0-9]{16}(:c)?"$'
NAME_MAX_LENGTH = 1024
#: No control characters (else 400). The name must also be printable and have no ``.`` or
#: ``..`` segment, which a pattern of every regex dialect cannot state: those are 400s too.
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"

#: The JSON body of every refusal, and a header that is ``true`` when present (shared with
#: :mod:`chatscale.server.openapi_durable`).
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
TRUE = {"type": "string", "const": "true"}
_UINT_TEXT = {"type": "string", "pattern": r"^(0|[1-9][0-9]*)$"}


def _header(description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    header: dict[str, Any] = {"description": description, "schema": schema}
    if required:
        header["required"] = True
    return header


def _next_offset(description: str, required: bool = True) -> dict[str, Any]:
    return _header(description, {"type": "string", "pattern": OFFSET_PATTERN}, required)


_UP_TO_DATE = _header("The answer reaches the stream's tail", TRUE)
_CLOSED = _header("The stream is closed: nothing will follow its tail", TRUE)
_CURSOR = _header(
    "Send it back as `cursor`: the protocol's 20 s intervals (jittered when a client "
    "echoes a current one), so caches never serve a live answer in a loop",
    {"type": "string", "pattern": "^[0-9]+$"},
)
_ETAG = _header(
    "The range read; `If-None-Match` with it is answered 304",
    {
        "type": "string",
        "pattern": ETAG_PATTERN,
    },
)
_CACHE = _header(
    "`no-store`, `no-cache` (SSE) or, for data, `private, max-age=60, ...`", {"type": "string"}
)
_RETRY_AFTER = _header("Seconds to wait before retrying", _UINT_TEXT, required=True)
_PRODUCER_EPOCH = _header("The producer's epoch (on a 403: the current one)", _UINT_TEXT)
_PRODUCER_SEQ = _header("The highest sequence number accepted of this producer", _UINT_TEXT)


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ERROR_BODY}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _bodiless(answer: dict[str, Any]) -> dict[str, Any]:
    """A HEAD refusal: the same status and headers, no body."""
    return {k: v for k, v in answer.items() if k != "content"}


_BAD_NAME = "a stream name that is not 1 to 1024 printable characters, or has a `.`/`..` segment"
_NO_TOKEN = _error(
    "No bearer token, or one that is neither in DURABLE_STREAMS_READ_TOKENS nor in "
    "DURABLE_STREAMS_WRITE_TOKENS (not with DURABLE_STREAMS_AUTH=none)",
    {
        "WWW-Authenticate": _header(
            "The scheme to use", {"type": "string", "const": 'Bearer realm="durable-streams"'}, True
        )
    },
)
_WRITE_REFUSED = "A read token (DURABLE_STREAMS_READ_TOKENS) on a write"
_NOT_FOUND = _error("No such stream (never created, deleted, or expired)")
_GONE = _error(
    "The stream was deleted but forks still read its data: its path stays taken until they go"
)
_UNAVAILABLE = _error("The storage (Redis) does not answer; retry", {"Retry-After": _RETRY_AFTER})
_RATE_LIMITED = _error(
    "Too many writes from this client (DURABLE_STREAMS_WRITE_RATE_LIMIT)",
    {"Retry-After": _RETRY_AFTER},
)
_TOO_LARGE = _error("The body is larger than DURABLE_STREAMS_MAX_BODY")
_TOO_SLOW = _error("The body did not arrive within REQUEST_BODY_TIMEOUT")


def _name_parameter() -> dict[str, Any]:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "The stream's name: 1 to 1024 printable characters, which may hold `/` "
        "(`a/b` is the stream `{base}/a/b`), without `.` or `..` segments (else 400)",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": NAME_MAX_LENGTH,
            "pattern": NAME_PATTERN,
        },
    }


def _header_parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "header", "description": description, "schema": schema}


def _create_parameters(base_path: str) -> list[dict[str, Any]]:
    # Only "." is special in a regex among the characters a base path may hold.
    base = base_path.replace(".", r"\.")
    return [
        _header_parameter(
            "Stream-TTL",
            "Expire the stream this many seconds after its last read or write (at most ten "
            "years); not with Stream-Expires-At",
            {"type": "string", "pattern": TTL_PATTERN},
        ),
        _header_parameter(
            "Stream-Expires-At",
            "Expire the stream at this RFC 3339 time; not with Stream-TTL",
            {"type": "string", "pattern": EXPIRES_AT_PATTERN},
        ),
        _header_parameter(
            "Stream-Closed",
            "`true`: create the stream closed (its body is all it will ever hold)",
            {"type": "string", "pattern": FLAG_PATTERN},
        ),
        _header_parameter(
            "Stream-Forked-From",
            "Fork this stream (its path, e.g. `{base}/source`): the new one starts with its "
            "data up to Stream-Fork-Offset and inherits its content type and expiry unless "
            "given",
            {"type": "string", "pattern": f"^{base}/.+$"},
        ),
        _header_parameter(
            "Stream-Fork-Offset",
            "Where the fork starts: `-1` the source's start, or an offset of the source "
            "(default: its tail); needs Stream-Forked-From",
            {"type": "string", "pattern": FORK_OFFSET_PATTERN},
        ),
        _header_parameter(
            "Stream-Fork-Sub-Offset",
            "Also keep this many bytes (JSON: messages) of the append at Stream-Fork-Offset; "
            "needs Stream-Fork-Offset",
            {"type": "string", "pattern": UINT_PATTERN},
        ),
    ]


def _append_parameters() -> list[dict[str, Any]]:
    uint = {"type": "string", "pattern": UINT_PATTERN}
    together = "; Producer-Id, Producer-Epoch and Producer-Seq go together (else 400)"
    return [
        _header_parameter(
            "Stream-Closed",
            "`true`: close the stream after this append (or, without a body, just close it)",
            {"type": "string", "pattern": FLAG_PATTERN},
        ),
        _header_parameter(
            "Stream-Seq",
            "A writer's sequence: must be byte-wise greater than the stream's last one (else 409)",
            {"type": "string", "minLength": 1},
        ),
        _header_parameter(
            "Producer-Id",
            "An idempotent producer (not blank)" + together,
            {"type": "string", "minLength": 1},
        ),
        _header_parameter("Producer-Epoch", "The producer's epoch" + together, uint),
        _header_parameter(
            "Producer-Seq", "The producer's sequence number in its epoch" + together, uint
        ),
    ]


def _read_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "offset",
            "in": "query",
            "schema": {"type": "string", "pattern": OFFSET_QUERY_PATTERN},
            "description": "Where to read from: `-1` (default) the start, `now` the tail, or "
            "a `Stream-Next-Offset` of this stream (an offset that is not a position of the "
            "stream is a 400)",
        },
        {
            "name": "live",
            "in": "query",
            "schema": {"type": "string", "enum": ["long-poll", "sse"]},
            "description": "Wait for data (long-poll: up to DURABLE_STREAMS_LONG_POLL_TIMEOUT, "
            "then 204) or stream it as Server-Sent Events (sse: until "
            "DURABLE_STREAMS_SSE_DURATION, or the stream's close or deletion); needs `offset` "
            "(else 400)",
        },
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string"},
            "description": "The last `Stream-Cursor` (SSE: `streamCursor`) received",
        },
        _header_parameter(
            "If-None-Match",
            "ETags of a catch-up read already held: the same range is answered 304",
            {"type": "string"},
        ),
    ]


_BODY_SCHEMAS: dict[str, Any] = {
    "application/json": {
        "schema": {},
        "description": "JSON mode: one JSON value is one message, a top-level array is "
        "one message per element (`[]`: none; refused by POST)",
    },
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "text/plain": {"schema": {"type": "string"}},
}
#: One Server-Sent Event of ``live=sse``, as a client parses it (OpenAPI 3.1: an event
#: stream's ``schema`` describes each event; its field values are text). Also the chat
#: view's (:mod:`chatscale.server.openapi_durable`).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["data", "control"]},
        "data": {"type": "string"},
    },
    "required": ["event", "data"],
}
_SSE = (
    "`live=sse`: Server-Sent Events: an `event: data` (for JSON streams an array of "
    "messages; text as lines; other types base64, with `Stream-SSE-Data-Encoding: base64`) "
    "then an `event: control` {streamNextOffset, streamCursor, upToDate, streamClosed}"
)


def _security(scope: str, open_: bool) -> list[dict[str, list[str]]]:
    # OpenAPI 3.1 lets a requirement of an http scheme name roles: read or write tokens.
    return [{}] if open_ else [{SCHEME: [scope]}]


def security_schemes() -> dict[str, Any]:
    """``components.securitySchemes`` of the protocol's routes."""
    return {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <token>`: a token of "
            "DURABLE_STREAMS_READ_TOKENS may GET and HEAD (role `read`), one of "
            "DURABLE_STREAMS_WRITE_TOKENS may also PUT, POST and DELETE (role `write`). "
            "DURABLE_STREAMS_AUTH=none opens the routes (no requirement is listed then)",
        }
    }


def protocol_paths(base_path: str, *, open_: bool = False) -> dict[str, Any]:
    """The path item of ``{base_path}/{name}``: PUT, POST, GET, HEAD, DELETE and OPTIONS.
    ``open_`` (``DURABLE_STREAMS_AUTH=none``): the routes need no token."""
    name = _name_parameter()
    read = _security("read", open_)
    write = _security("write", open_)
    bad_name = f"; or {_BAD_NAME}"
    put = {
        "operationId": "createStream",
        "summary": "Create a stream (idempotent: the same configuration again is a 200), "
        "optionally with its first data, closed, or as a fork",
        "description": "The request's Content-Type is the stream's (default "
        "application/octet-stream, compared without parameters and case).",
        "parameters": _create_parameters(base_path),
        "security": write,
        "requestBody": {"required": False, "content": _BODY_SCHEMAS},
        "responses": {
            "201": {
                "description": "Created",
                "headers": {
                    "Location": _header("The stream's URL", {"type": "string"}, True),
                    "Stream-Next-Offset": _next_offset("The stream's tail"),
                    "Stream-Closed": _CLOSED,
                },
                "links": _links_from_create(),
            },
            "200": {
                "description": "The stream exists with this configuration: nothing changed",
                "headers": {
                    "Stream-Next-Offset": _next_offset("The stream's tail"),
                    "Stream-Closed": _CLOSED,
                },
                "links": _links_from_create(),
            },
            "400": _error(
                "A malformed header (Stream-TTL, Stream-Expires-At, both of them, "
                "Stream-Closed, a fork header, one given twice), a body that is not JSON in "
                "JSON mode, or a fork point that is not an offset of the source" + bad_name
            ),
            "401": _NO_TOKEN,
            "403": _error(_WRITE_REFUSED),
            "404": _error("The stream to fork (Stream-Forked-From) does not exist"),
            "408": _TOO_SLOW,
            "409": _error(
                "The stream exists with another content type, expiry or fork origin; a "
                "deleted stream still read by forks holds the path; the source to fork was "
                "deleted; or a fork's Content-Type differs from its source's"
            ),
            "413": _TOO_LARGE,
            "429": _RATE_LIMITED,
            "503": _UNAVAILABLE,
        },
    }
    post = {
        "operationId": "appendStream",
        "summary": "Append to a stream (and/or close it); idempotent with a producer",
        "description": "The request's Content-Type must be the stream's (without parameters "
        "and case); a request without body only closes the stream (`Stream-Closed: true`).",
        "parameters": _append_parameters(),
        "security": write,
        "requestBody": {"required": False, "content": _BODY_SCHEMAS},
        "responses": {
            "200": {
                "description": "A producer's new data, stored",
                "headers": {
                    "Stream-Next-Offset": _next_offset("The stream's tail"),
                    "Stream-Closed": _CLOSED,
                    "Producer-Epoch": {**_PRODUCER_EPOCH, "required": True},
                    "Producer-Seq": {**_PRODUCER_SEQ, "required": True},
                },
            },
            "204": {
                "description": "Appended (or closed); a producer's duplicate (nothing "
                "stored, its highest accepted seq echoed); or closing a closed stream again",
                "headers": {
                    "Stream-Next-Offset": _next_offset("The stream's tail"),
                    "Stream-Closed": _CLOSED,
                    "Producer-Epoch": _PRODUCER_EPOCH,
                    "Producer-Seq": _PRODUCER_SEQ,
                },
            },
            "400": _error(
                "An empty body without Stream-Closed, data without Content-Type, a body that "
                "is not JSON (or `[]`) in JSON mode, a malformed or repeated header, "
                "producer headers not given together, or a new producer epoch not at seq 0"
                + bad_name
            ),
            "401": _NO_TOKEN,
            "403": _error(
                f"{_WRITE_REFUSED}; or a stale producer epoch (the current one in Producer-Epoch)",
                {"Producer-Epoch": _PRODUCER_EPOCH},
            ),
            "404": _NOT_FOUND,
            "408": _TOO_SLOW,
            "409": _error(
                "The stream is closed (Stream-Closed, its tail in Stream-Next-Offset); the "
                "Content-Type is not the stream's; Stream-Seq did not grow; or a producer "
                "sequence gap (Producer-Expected-Seq, Producer-Received-Seq)",
                {
                    "Stream-Closed": _CLOSED,
                    "Stream-Next-Offset": _next_offset("The closed stream's tail", False),
                    "Producer-Expected-Seq": _header("The seq expected", _UINT_TEXT),
                    "Producer-Received-Seq": _header("The seq received", _UINT_TEXT),
                },
            ),
            "410": _GONE,
            "413": _TOO_LARGE,
            "429": _RATE_LIMITED,
            "503": _UNAVAILABLE,
        },
    }
    get = {
        "operationId": "readStream",
        "summary": "Read a stream from an offset: catch-up, long-poll or SSE",
        "parameters": _read_parameters(),
        "security": read,
        "responses": {
            "200": {
                "description": "Catch-up or long-poll: the data from the offset on (at most "
                "DURABLE_STREAMS_MAX_READ bytes; read on from Stream-Next-Offset), in the "
                "stream's content type (JSON streams: one array of every message); "
                "`offset=now`: nothing, at the tail (JSON streams: `[]`). " + _SSE,
                "headers": {
                    "Stream-Next-Offset": _next_offset("Where to read on from", False),
                    "Stream-Up-To-Date": _UP_TO_DATE,
                    "Stream-Closed": _CLOSED,
                    "Stream-Cursor": _CURSOR,
                    "ETag": _ETAG,
                    "Cache-Control": _CACHE,
                    "Stream-SSE-Data-Encoding": _header(
                        "SSE of a stream that is neither text nor JSON: data events are base64",
                        {"type": "string", "const": "base64"},
                    ),
                },
                "content": {
                    "application/json": {"schema": {"type": "array"}},
                    "text/event-stream": {"schema": SSE_EVENT},
                    "*/*": {"schema": {}},
                },
            },
            "204": {
                "description": "Long-poll: nothing within DURABLE_STREAMS_LONG_POLL_TIMEOUT "
                "(with Stream-Cursor), or the stream is closed at the offset (Stream-Closed)",
                "headers": {
                    "Stream-Next-Offset": _next_offset("Where to read on from"),
                    "Stream-Up-To-Date": {**_UP_TO_DATE, "required": True},
                    "Stream-Closed": _CLOSED,
                    "Stream-Cursor": _CURSOR,
                },
            },
            "304": {
                "description": "The range read has an ETag given in If-None-Match",
                "headers": {
                    "Stream-Next-Offset": _next_offset("Where to read on from"),
                    "ETag": {**_ETAG, "required": True},
                    "Stream-Up-To-Date": _UP_TO_DATE,
                    "Stream-Closed": _CLOSED,
                    "Stream-Cursor": _CURSOR,
                },
            },
            "400": _error(
                "A malformed, empty or repeated `offset`, one that is not a position of the "
                "stream, an unknown or repeated `live`, or `live` without `offset`" + bad_name
            ),
            "401": _NO_TOKEN,
            "404": _NOT_FOUND,
            "410": _GONE,
            "503": _UNAVAILABLE,
        },
    }
    head = {
        "operationId": "headStream",
        "summary": "A stream's metadata: tail, content type, expiry, closed (no body)",
        "security": read,
        "responses": {
            "200": {
                "description": "No body; Content-Type is the stream's",
                "headers": {
                    "Stream-Next-Offset": _next_offset("The stream's tail"),
                    "Stream-TTL": _header("The stream's TTL in seconds", _UINT_TEXT),
                    "Stream-Expires-At": _header("The stream's expiry", {"type": "string"}),
                    "Stream-Closed": _CLOSED,
                    "Cache-Control": _header("no-store", {"type": "string", "const": "no-store"}),
                },
            },
            "400": _bodiless(_error(_BAD_NAME[0].upper() + _BAD_NAME[1:])),
            "401": _bodiless(_NO_TOKEN),
            "404": _bodiless(_NOT_FOUND),
            "410": _bodiless(_GONE),
            "503": _bodiless(_UNAVAILABLE),
        },
    }
    delete = {
        "operationId": "deleteStream",
        "summary": "Delete a stream (kept as a tombstone, 410, while forks read its data)",
        "security": write,
        "responses": {
            "204": {"description": "Deleted"},
            "400": _error(_BAD_NAME[0].upper() + _BAD_NAME[1:]),
            "401": _NO_TOKEN,
            "403": _error(_WRITE_REFUSED),
            "404": _NOT_FOUND,
            "410": _GONE,
            "429": _RATE_LIMITED,
            "503": _UNAVAILABLE,
        },
    }
    options = {
        "operationId": "preflightStream",
        "summary": "CORS preflight: the protocol's methods and request headers are allowed "
        "from any origin (no token needed)",
        "security": [{}],
        "responses": {
            "204": {
                "description": "No body",
                "headers": {
                    "Access-Control-Allow-Methods": _header(
                        "The protocol's methods", {"type": "string"}, True
                    ),
                    "Access-Control-Allow-Headers": _header(
                        "The protocol's request headers", {"type": "string"}, True
                    ),
                    "Access-Control-Max-Age": _header("600", _UINT_TEXT, True),
                },
            }
        },
    }
    for operation in (put, post, get, head, delete):
        # On each operation, not the path item: the document's other paths are read as
        # methods only (and the middleware's answers are added to every operation).
        operation["parameters"] = [name, *operation.get("parameters", [])]
    # A preflight answers before the name is read: any name.
    options["parameters"] = [{**name, "schema": {"type": "string"}}]
    return {
        f"{base_path}/{{name}}": {
            "put": put,
            "post": post,
            "get": get,
            "head": head,
            "delete": delete,
            "options": options,
        }
    }


def _links_from_create() -> dict[str, Any]:
    # Lets clients (and schemathesis's stateful phase) go on with the stream just created.
    stream = {"name": "$request.path.name"}
    return {
        op: {"operationId": op_id, "parameters": stream}
        for op, op_id in (
            ("AppendStream", "appendStream"),
            ("ReadStream", "readStream"),
            ("HeadStream", "headStream"),
            ("DeleteStream", "deleteStream"),
        )
    }
