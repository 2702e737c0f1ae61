"""The Durable Streams express lane (chatscale.server.express): a plain request gets, in one
step, what the common chain gives it (request id, instance and security headers, metrics,
body bound, catch-all, origin check); every other request takes the chain itself. Driven in
process, as the server calls the application, so the two paths answer the same requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from chatscale.config import load_settings
from chatscale.server.app import create_app
from chatscale.server.bodylimit import BODY_RECEIVED
from chatscale.server.express import ExpressLane
from tests.server.procs import ServeProcess

WRITE = "write-token-0123456789"
BASE = "/v1/stream"
#: Headers whose values differ between two answers to the same request.
_VARYING = {b"x-request-id", b"etag", b"location"}


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[Starlette]:
    """The whole application (memory backends), its lifespan started."""
    settings = load_settings(
        durable_streams=True,
        durable_streams_write_tokens=WRITE,
        durable_streams_max_body=1024,
        allowed_origins="https://allowed.example",
    )
    app = create_app(settings)
    events: asyncio.Queue[Message] = asyncio.Queue()
    started = asyncio.Event()

    async def receive() -> Message:
        return await events.get()

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await events.put({"type": "lifespan.startup"})
    life = asyncio.create_task(app({"type": "lifespan"}, receive, send))
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield app
    finally:
        await events.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(life, 10)


def request(
    method: str,
    name: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    received: bool = True,
    query: bytes = b"",
) -> tuple[Scope, Receive]:
    """An HTTP request as uvicorn hands it over; ``received``: its whole body has arrived
    (the server's protocol marks it)."""
    raw = [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {WRITE}".encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": f"{BASE}/{name}",
        "raw_path": f"{BASE}/{name}".encode(),
        "root_path": "",
        "query_string": query,
        "headers": raw,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }
    if received:
        scope[BODY_RECEIVED] = True
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return scope, receive


async def call(app: Any, scope: Scope, receive: Receive) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers (the last of each name) and body of one request."""
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    start = messages[0]
    assert start["type"] == "http.response.start"
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], dict(start["headers"]), body


class Spy:
    """Counts the requests that reach the full chain."""

    def __init__(self, lane: ExpressLane) -> None:
        self.full = lane.full
        self.calls = 0
        lane.full = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.full(scope, receive, send)


def lane_of(app: Starlette) -> ExpressLane:
    lane = app.lanes[0].app  # type: ignore[attr-defined]
    assert isinstance(lane, ExpressLane)
    return lane


_TEXT = {"Content-Type": "text/plain"}
#: (method, stream, body, headers, query, status): run twice on a fresh stream each, once
#: through the lane and once through the chain; the first PUT (``setup``) makes the stream.
CASES = [
    ("PUT", b"", _TEXT, b"", 200),  # the same again
    ("PUT", b"", {"Content-Type": "application/json"}, b"", 409),
    ("POST", b"more", _TEXT, b"", 204),
    ("POST", b'"more"', {"Content-Type": "application/json"}, b"", 409),
    ("POST", b"{nope", {"Content-Type": "application/json"}, b"", 400),
    ("POST", b"", _TEXT, b"", 400),
    ("POST", b"x", {**_TEXT, "Stream-Seq": ""}, b"", 400),
    ("GET", b"", {}, b"offset=-1", 200),
    ("GET", b"", {}, b"offset=nonsense", 400),
    ("HEAD", b"", {}, b"", 200),
    ("OPTIONS", b"", {}, b"", 204),
    ("PATCH", b"", {}, b"", 405),
    ("DELETE", b"", {}, b"", 204),
]


@pytest.mark.parametrize(("method", "body", "headers", "query", "status"), CASES)
async def test_the_lane_answers_as_the_chain_does(
    method: str, body: bytes, headers: dict[str, str], query: bytes, status: int
) -> None:
    async with running() as app:
        lane = lane_of(app)
        answers = []
        for path, target in (("lane", lane), ("chain", lane.full)):
            setup, receive = request("PUT", f"{path}-{method}", b"", _TEXT)
            assert (await call(lane, setup, receive))[0] == 201
            scope, receive = request(method, f"{path}-{method}", body, headers, query=query)
            answers.append(await call(target, scope, receive))
        (status_a, headers_a, body_a), (status_b, headers_b, body_b) = answers
        assert status_a == status_b == status, body_a
        assert body_a == body_b
        assert set(headers_a) == set(headers_b)
        for name in set(headers_a) - _VARYING:
            assert headers_a[name] == headers_b[name], name
        # The common layers' headers are there in both.
        for found in (headers_a, headers_b):
            assert found[b"x-content-type-options"] == b"nosniff"
            assert found[b"x-chatscale-instance"]
            assert found[b"x-request-id"]
            assert found[b"access-control-allow-origin"] == b"*"


async def test_plain_requests_take_the_lane_and_the_others_the_chain() -> None:
    async with running() as app:
        lane = lane_of(app)
        spy = Spy(lane)
        scope, receive = request("PUT", "s", b"", _TEXT)
        assert (await call(lane, scope, receive))[0] == 201
        scope, receive = request("POST", "s", b"x", _TEXT)
        assert (await call(lane, scope, receive))[0] == 204
        scope, receive = request("POST", "s", b"x", {**_TEXT, "Origin": "https://allowed.example"})
        assert (await call(lane, scope, receive))[0] == 204
        scope, receive = request("GET", "s", query=b"offset=-1")
        assert (await call(lane, scope, receive))[2] == b"xx"
        assert spy.calls == 0
        # Refused cross-origin, a body over the bound, a body still arriving: the chain.
        scope, receive = request("POST", "s", b"x", {**_TEXT, "Origin": "https://evil.example"})
        status, _, body = await call(lane, scope, receive)
        assert status == 403 and b"cross-origin" in body
        scope, receive = request("POST", "s", b"x" * 2000, _TEXT)
        status, headers, body = await call(lane, scope, receive)
        assert status == 413 and b"DURABLE_STREAMS_MAX_BODY" in body
        assert headers[b"x-request-id"]
        scope, receive = request("POST", "s", b"y", _TEXT, received=False)
        assert (await call(lane, scope, receive))[0] == 204
        assert spy.calls == 3
        scope, receive = request("GET", "s", query=b"offset=-1")
        assert (await call(lane, scope, receive))[2] == b"xxy"


async def test_a_request_id_from_a_proxy_is_kept_and_the_request_counted() -> None:
    async with running() as app:
        lane = lane_of(app)
        metrics = app.state.services.metrics
        before = metrics.requests.count(f"{BASE}/{{name}}", "PUT", 201)
        spy = Spy(lane)
        scope, receive = request("PUT", "r", b"", {**_TEXT, "X-Request-ID": "proxy-id-1"})
        status, headers, _ = await call(app, scope, receive)
        assert status == 201
        assert headers[b"x-request-id"] == b"proxy-id-1"
        assert metrics.requests.count(f"{BASE}/{{name}}", "PUT", 201) == before + 1
        assert spy.calls == 0


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (RedisConnectionError("gone"), 503, b"temporarily unavailable"),
        (RuntimeError("a bug"), 500, b"internal error"),
    ],
)
async def test_a_failing_store_is_a_json_error_with_the_common_headers(
    error: Exception, status: int, words: bytes
) -> None:
    async with running() as app:
        lane = lane_of(app)
        protocol = app.state.durable.app

        class Failing:
            async def append(self, *args: object) -> None:
                raise error

        protocol.store_of = Failing
        spy = Spy(lane)
        scope, receive = request("POST", "f", b"x", _TEXT)
        answered, headers, body = await call(app, scope, receive)
        assert spy.calls == 0
        assert answered == status
        assert words in body and body.startswith(b'{"error":')
        assert headers[b"x-request-id"] and headers[b"x-content-type-options"] == b"nosniff"
        metrics = app.state.services.metrics
        assert metrics.requests.count(f"{BASE}/{{name}}", "POST", status) == 1


async def test_whole_answers_on_a_real_server_keep_pipelined_requests_in_order(
    tmp_path: Path,
) -> None:
    """On ``chatscale serve`` the lane writes each whole answer at once
    (chatscale.server.protocol.send_whole): pipelined requests still get their answers in
    order, a HEAD answer has no body, and ``Connection: close`` closes after its answer."""
    server = ServeProcess(
        {"DURABLE_STREAMS": "true", "DURABLE_STREAMS_AUTH": "none"}, tmp_path / "serve.log"
    )
    server.start()
    path = f"{BASE}/pipelined".encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(
                b"PUT " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 2\r\n\r\nab"
                b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 1\r\n\r\nc"
                b"HEAD " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET " + path + b"?offset=-1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(-1), 10)  # to the server's close
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    finally:
        server.stop()
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"201", b"204", b"200", b"200"], raw
    created, appended, head, read = answers
    assert b"\r\nlocation: " in created.lower() and created.endswith(b"\r\n\r\n")
    assert b"x-request-id: " in appended and appended.endswith(b"\r\n\r\n")
    # Each common header once, those written out once (the security, instance and CORS
    # headers) as much as those made per answer.
    names = [line.split(b":")[0].lower() for line in appended.split(b"\r\n")[1:] if line]
    assert len(names) == len(set(names)), names
    for name in (
        b"x-request-id",
        b"x-chatscale-instance",
        b"content-security-policy",
        b"x-content-type-options",
        b"access-control-allow-origin",
        b"access-control-expose-headers",
        b"cross-origin-resource-policy",
        b"stream-next-offset",
        b"date",
    ):
        assert name in names, name
    assert b"\r\ncontent-length: 0\r\n" in head and head.endswith(b"\r\n\r\n")
    assert b"connection: close\r\n" in read and read.endswith(b"\r\n\r\nabc"), raw
