"""Appends answered at once (chatscale.server.protocol.GuardedHttpToolsProtocol with
ExpressLane.answer_now): from the HTTP protocol's callback, without a response cycle or a
task, the same answer as the chain's, and every request that cannot be answered so (a
refusal, a body still arriving, a pipelined request, another method) served as before."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chatscale.config import load_settings
from chatscale.server.express import ExpressLane
from tests.server.helpers import ServerThread
from tests.server.test_edge import connection
from tests.server.test_express import _TEXT, _VARYING, BASE, call, lane_of, request, running

Answer = tuple[int, dict[bytes, bytes], bytes]


def parse_whole(status: int, lines: bytes, body: bytes) -> Answer:
    """An answer given at once, as :func:`tests.server.test_express.call` gives one."""
    headers: dict[bytes, bytes] = {}
    for line in lines.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            headers[name] = value
    return status, headers, body


async def read_stream(app: Any, name: str) -> bytes:
    scope, receive = request("GET", name, query=b"offset=-1")
    status, _, body = await call(app, scope, receive)
    assert status == 200
    return body


async def test_an_append_at_once_answers_as_the_chain_does() -> None:
    async with running() as app:
        lane = lane_of(app)
        answers = []
        for name in ("now", "chain"):
            setup, receive = request("PUT", name, b"", _TEXT)
            assert (await call(lane, setup, receive))[0] == 201
        scope, _ = request("POST", "now", b"more", _TEXT)
        whole = app.answer_now(scope, b"more")  # type: ignore[attr-defined]
        assert whole is not None
        answers.append(parse_whole(*whole))
        scope, receive = request("POST", "chain", b"more", _TEXT)
        answers.append(await call(lane.full, scope, receive))
        (status_a, headers_a, body_a), (status_b, headers_b, body_b) = answers
        assert status_a == status_b == 204
        assert body_a == body_b == b""
        assert set(headers_a) == set(headers_b)
        for header in set(headers_a) - _VARYING:
            assert headers_a[header] == headers_b[header], header
        assert headers_a[b"x-request-id"] and headers_a[b"x-content-type-options"] == b"nosniff"
        assert await read_stream(app, "now") == b"more"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'"more"', {"Content-Type": "application/json"}, 409),  # not the stream's type
        (b"", _TEXT, 400),  # empty
        (b"x", {**_TEXT, "Stream-Seq": ""}, 400),
        (b"x", {**_TEXT, "Authorization": "Bearer wrong"}, 401),
        (b"x", {**_TEXT, "Origin": "https://evil.example"}, 403),  # cross-origin
        (b"x" * 2000, _TEXT, 413),  # over DURABLE_STREAMS_MAX_BODY
    ],
)
async def test_a_refusal_is_left_to_the_chain_and_changes_nothing(
    body: bytes, headers: dict[str, str], status: int
) -> None:
    async with running() as app:
        lane = lane_of(app)
        setup, receive = request("PUT", "s", b"", _TEXT)
        assert (await call(lane, setup, receive))[0] == 201
        given = {k: v for k, v in headers.items() if k != "Authorization"}
        scope, receive = request("POST", "s", body, given)
        if "Authorization" in headers:  # in place of the good token request() gives
            scope["headers"] = [
                (name, headers["Authorization"].encode() if name == b"authorization" else value)
                for name, value in scope["headers"]
            ]
        assert app.answer_now(scope, body) is None  # type: ignore[attr-defined]
        assert await read_stream(app, "s") == b""
        # Served again as usual, it is refused there.
        assert (await call(lane, scope, receive))[0] == status


async def test_only_appends_to_a_store_that_appends_at_once_are_taken() -> None:
    async with running() as app:
        assert app.takes_now("POST", f"{BASE}/s".encode())  # type: ignore[attr-defined]
        assert app.takes_now("POST", f"{BASE}/a/b?x=1".encode())  # type: ignore[attr-defined]
        for method in ("PUT", "GET", "HEAD", "DELETE", "OPTIONS"):
            assert not app.takes_now(method, f"{BASE}/s".encode())  # type: ignore[attr-defined]
        # Elsewhere, or a path that matches the lane only once decoded: the usual way.
        assert not app.takes_now("POST", b"/api/chat")  # type: ignore[attr-defined]
        assert not app.takes_now("POST", b"/v1/str%65am/s")  # type: ignore[attr-defined]
        protocol = app.state.durable.app
        store = protocol.at_once
        protocol.at_once = None  # a store on Redis
        assert not app.takes_now("POST", f"{BASE}/s".encode())  # type: ignore[attr-defined]
        protocol.at_once = store
        protocol.write_limit = object()  # DURABLE_STREAMS_WRITE_RATE_LIMIT
        assert not app.takes_now("POST", f"{BASE}/s".encode())  # type: ignore[attr-defined]


async def test_a_failing_store_is_a_counted_json_500_with_the_common_headers() -> None:
    async with running() as app:
        lane = lane_of(app)
        assert isinstance(lane, ExpressLane)
        protocol = app.state.durable.app

        def failing(*args: object) -> None:
            raise RuntimeError("a bug")

        protocol.at_once.append_plain = failing
        scope, _ = request("POST", "f", b"x", _TEXT)
        whole = app.answer_now(scope, b"x")  # type: ignore[attr-defined]
        assert whole is not None
        status, headers, body = parse_whole(*whole)
        assert status == 500 and body.startswith(b'{"error":') and b"internal error" in body
        assert headers[b"x-request-id"] and headers[b"x-content-type-options"] == b"nosniff"
        assert headers[b"content-length"] == str(len(body)).encode()
        metrics = app.state.services.metrics
        assert metrics.requests.count(f"{BASE}/{{name}}", "POST", 500) == 1


# --- on the server's own HTTP protocol ---------------------------------------------------


@contextlib.contextmanager
def server_counting() -> Iterator[tuple[ServerThread, list[int]]]:
    """A server (memory) whose answers given at once are counted by status."""
    settings = load_settings(
        durable_streams=True, durable_streams_auth="none", durable_streams_max_body=1024
    )
    with ServerThread(settings) as server:
        app = server.app
        answered: list[int] = []
        given = app.answer_now  # type: ignore[attr-defined]

        def counting(scope: Any, body: bytes) -> Any:
            whole = given(scope, body)
            if whole is not None:
                answered.append(whole[0])
            return whole

        app.answer_now = counting  # type: ignore[attr-defined]
        yield server, answered


def post(name: str, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (
        b"POST " + f"{BASE}/{name}".encode() + b" HTTP/" + version + b"\r\nHost: t\r\n"
        b"Content-Type: text/plain\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


async def read_answers(reader: asyncio.StreamReader, count: int) -> list[Answer]:
    """``count`` answers without bodies of their own unless a content-length says so."""
    answers: list[Answer] = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower().encode()] = value.strip().encode()
        length = int(headers.get(b"content-length", b"0"))
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
        answers.append((int(lines[0].split()[1]), headers, body))
    return answers


def create(server: ServerThread, name: str, content_type: str = "text/plain") -> None:
    response = httpx.put(
        f"{server.url}{BASE}/{name}", headers={"Content-Type": content_type}, timeout=10
    )
    assert response.status_code == 201


def read(server: ServerThread, name: str) -> bytes:
    response = httpx.get(f"{server.url}{BASE}/{name}?offset=-1", timeout=10)
    assert response.status_code == 200
    return response.content


async def test_pipelined_appends_are_answered_at_once_in_order() -> None:
    with server_counting() as (server, answered):
        create(server, "p")
        async with connection(server) as (reader, writer):
            writer.write(b"".join(post("p", bytes([97 + i]) * 3) for i in range(5)))
            await writer.drain()
            answers = await read_answers(reader, 5)
        offsets = [headers[b"stream-next-offset"] for _, headers, _ in answers]
        assert [status for status, _, _ in answers] == [204] * 5
        assert offsets == sorted(offsets) and len(set(offsets)) == 5
        assert len({headers[b"x-request-id"] for _, headers, _ in answers}) == 5
        assert answered == [204] * 5
        assert read(server, "p") == b"aaabbbcccdddeee"
        metrics = server.services.metrics
        assert metrics.requests.count(f"{BASE}/{{name}}", "POST", 204) == 5


async def test_a_body_still_arriving_refusals_and_closes_are_served_right() -> None:
    with server_counting() as (server, answered):
        create(server, "b")
        async with connection(server) as (reader, writer):
            # The body comes in a later packet: the request is served by its cycle.
            whole = post("b", b"12345678")
            writer.write(whole[:-4])
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(whole[-4:])
            # A refusal (the stream's type is text/plain), then an append at once.
            writer.write(post("b", b"{}").replace(b"text/plain", b"application/json"))
            await writer.drain()
            answers = await read_answers(reader, 2)
            writer.write(post("b", b"9"))
            await writer.drain()
            answers += await read_answers(reader, 1)
        assert [status for status, _, _ in answers] == [204, 409, 204]
        assert answers[1][2].startswith(b'{"error":')
        assert answered == [204]
        # Connection: close, and HTTP/1.0: answered, then the connection is closed.
        for extra, version in ((b"Connection: close\r\n", b"1.1"), (b"", b"1.0")):
            async with connection(server) as (reader, writer):
                writer.write(post("b", b"!", extra, version))
                await writer.drain()
                raw = await asyncio.wait_for(reader.read(-1), 10)  # to the server's close
            assert raw.startswith(b"HTTP/1.1 204 ") and b"connection: close\r\n" in raw, raw
        assert answered == [204, 204, 204]
        assert read(server, "b") == b"123456789!!"


async def test_expect_continue_and_an_append_behind_an_unfinished_answer_take_the_cycle() -> None:
    with server_counting() as (server, answered):
        create(server, "e")
        async with connection(server) as (reader, writer):
            writer.write(post("e", b"x", b"Expect: 100-continue\r\n"))
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if head.startswith(b"HTTP/1.1 100"):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 204 ")
            # A long-poll read, then an append pipelined behind it: the append waits for the
            # read's answer (which it completes) and is served by its own cycle.
            writer.write(
                b"GET " + f"{BASE}/e".encode() + b"?offset=now&live=long-poll HTTP/1.1\r\n"
                b"Host: t\r\n\r\n" + post("e", b"y")
            )
            await writer.drain()
            await asyncio.sleep(0.3)
            async with connection(server) as (other_reader, other_writer):
                other_writer.write(post("e", b"z"))
                await other_writer.drain()
                assert (await read_answers(other_reader, 1))[0][0] == 204
            answers = await read_answers(reader, 2)
        assert [status for status, _, _ in answers] == [200, 204]
        assert answers[0][2] == b"z"
        assert answered == [204]  # only the one from another connection
        assert read(server, "e") == b"xzy"


async def test_the_scheme_a_trusted_proxy_forwards_is_the_one_checked() -> None:
    """Behind uvicorn's proxy headers middleware (TRUSTED_PROXIES; the test server trusts
    127.0.0.1), an answer given at once sees the scope the middleware makes: an Origin of
    the server's own site over plain HTTP is not the server's own when the proxy says the
    client came over HTTPS."""
    with server_counting() as (server, answered):
        create(server, "o")
        own = b"Origin: http://t\r\n"
        answers: list[Answer] = []
        for extra in (own + b"X-Forwarded-Proto: https\r\n", own):
            async with connection(server) as (reader, writer):
                writer.write(post("o", b"x", extra))
                await writer.drain()
                answers += await read_answers(reader, 1)
        assert [status for status, _, _ in answers] == [403, 204]
        assert answered == [204]
        assert read(server, "o") == b"x"


async def test_a_client_that_does_not_read_its_answers_is_paused() -> None:
    """Answers given at once wait for the end of the turn, then for the socket; once
    either holds a write buffer's worth, requests take their cycle again, which waits for
    the client to read, and the server stops reading the requests behind (a client that
    never reads cannot make it buffer answers without bound)."""
    count = 20_000  # about 14 MB of answers
    with server_counting() as (server, answered):
        create(server, "w")
        # A small receive buffer: the kernel would otherwise take tens of MB of answers.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65_536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    _send_all(writer, b"".join(post("w", b"x") for _ in range(count)))
                )
                await asyncio.sleep(1.0)
                head = await asyncio.to_thread(httpx.head, f"{server.url}{BASE}/w", timeout=10)
                stored = int(head.headers["stream-next-offset"].split("_")[0])
                assert stored < count, "every append was answered into a full buffer"
                answers = await read_answers(reader, count)
        finally:
            writer.close()
        assert {status for status, _, _ in answers} == {204}
        assert 0 < len(answered) < count
        assert read(server, "w") == b"x" * count


async def _send_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
