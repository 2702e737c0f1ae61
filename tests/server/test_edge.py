"""The HTTP edge against real ``chatscale serve`` processes: forwarded addresses, bounded
bodies and headers, slow clients, protocol-level errors (docs/security.md, "The HTTP edge")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import httpx

from chatscale.server.headers import CONTENT_SECURITY_POLICY
from tests.server.helpers import ServerThread, read_events
from tests.server.procs import ServeProcess

FORGED = {"X-Forwarded-For": "203.0.113.9"}
CHAT = {"message": "hi"}


@contextlib.contextmanager
def serving(tmp_path: Path, **env: str) -> Iterator[ServeProcess]:
    server = ServeProcess({"DEMO_RESPONSE_TOKENS": "2", **env}, tmp_path / "serve.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Listening(Protocol):
    """A server under test on a loopback port (a process or a thread)."""

    port: int


@contextlib.asynccontextmanager
async def connection(
    server: Listening,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_answer(
    reader: asyncio.StreamReader, wait_s: float
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one answer (read until the server closes)."""
    raw = await asyncio.wait_for(reader.read(-1), wait_s)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def peak_rss_kib(server: ServeProcess) -> int:
    """The process's peak resident memory (VmHWM)."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# --- Item 2: X-Forwarded-For only from TRUSTED_PROXIES ---------------------------------------


def _chat(server: ServeProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    # No cookie is ever kept: each request is a new visitor, counted by its address.
    return httpx.post(f"{server.url}/api/chat", json=CHAT, headers=headers, timeout=10)


def _get_banned(server: ServeProcess) -> None:
    # CHAT_RATE_LIMIT=1/minute, BAN_VIOLATION_LIMIT=1: the second chat is a violation that
    # bans the address.
    assert _chat(server).status_code == 202
    assert _chat(server).status_code in (403, 429)
    assert _chat(server).status_code == 403


LIMITS = {"CHAT_RATE_LIMIT": "1/minute", "BAN_VIOLATION_LIMIT": "1", "BAN_DURATION": "60"}


def test_forged_forwarded_for_does_not_unban(tmp_path: Path) -> None:
    with serving(tmp_path, **LIMITS) as server:
        _get_banned(server)
        forged = _chat(server, FORGED)
    assert forged.status_code == 403, forged.text
    assert "banned" in forged.json()["error"]


def test_trusted_proxy_may_forward_the_client_address(tmp_path: Path) -> None:
    with serving(tmp_path, TRUSTED_PROXIES="127.0.0.1", **LIMITS) as server:
        _get_banned(server)
        forwarded = _chat(server, FORGED)
    assert forwarded.status_code == 202, forwarded.text  # another client: not banned


# --- Item 3: every body bounded while it is read ------------------------------------------


async def _send_chunked(
    writer: asyncio.StreamWriter, path: str, total: int, chunk: int = 65_536
) -> int:
    """POST a chunked JSON body of ``total`` bytes; the bytes sent before the server quit."""
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    piece = f"{chunk:x}\r\n".encode() + b"[" * chunk + b"\r\n"
    sent = 0
    try:
        while sent < total:
            writer.write(piece)
            await writer.drain()
            sent += chunk
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except OSError:
        pass
    return sent


async def test_chunked_body_is_refused_at_the_bound_without_buffering(tmp_path: Path) -> None:
    total = 256 * 1_048_576
    with serving(tmp_path) as server:
        before = peak_rss_kib(server)
        async with connection(server) as (reader, writer):
            sender = asyncio.create_task(_send_chunked(writer, "/api/chat", total))
            status, headers, body = await read_answer(reader, wait_s=60)
            await asyncio.wait_for(sender, 60)
        grown_mib = (peak_rss_kib(server) - before) / 1024
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{server.url}/healthz")).status_code == 200
    assert status == 413, body
    assert headers["content-type"] == "application/json"
    assert "MAX_MESSAGE_CHARS" in json.loads(body)["error"]
    assert grown_mib < 32, f"peak RSS grew by {grown_mib:.0f} MiB"


async def test_whole_chunked_body_over_the_bound_is_413(tmp_path: Path) -> None:
    """A chunked body that arrives whole with its headers (buffered before the route reads
    it, so read without a timeout) is still counted against the bound."""
    settings = {"DURABLE_STREAMS": "true", "DURABLE_STREAMS_AUTH": "none"}
    with serving(tmp_path, DURABLE_STREAMS_MAX_BODY="1000", **settings) as server:
        async with connection(server) as (reader, writer):
            body = b"x" * 1500
            writer.write(
                b"POST /v1/stream/s HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                + f"{len(body):x}\r\n".encode()
                + body
                + b"\r\n0\r\n\r\n"
            )
            status, _, answer = await read_answer(reader, wait_s=10)
    assert status == 413, answer
    assert "DURABLE_STREAMS_MAX_BODY" in json.loads(answer)["error"]


async def test_body_over_content_length_bound_is_413_on_any_route(tmp_path: Path) -> None:
    with serving(tmp_path, MAX_REQUEST_BODY_BYTES="1000") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            other = await client.post("/api/chat/stream/abc/abort", content=b"x" * 1001)
            chat = await client.post("/api/chat", json={"message": "x" * 2000})
    assert other.status_code == 413
    assert "MAX_REQUEST_BODY_BYTES" in other.json()["error"]
    assert chat.status_code == 202, chat.text  # the chat route has its own bound


# --- Item 5: header size, slow headers, slow bodies, keep-alive ---------------------------


async def test_huge_header_is_refused(tmp_path: Path) -> None:
    total = 64 * 1_048_576
    with serving(tmp_path) as server:
        before = peak_rss_kib(server)
        async with connection(server) as (reader, writer):

            async def send() -> int:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
                sent = 0
                try:
                    while sent < total:
                        writer.write(b"a" * 65_536)
                        await writer.drain()
                        sent += 65_536
                    writer.write(b"\r\n\r\n")
                    await writer.drain()
                except OSError:
                    pass
                return sent

            sender = asyncio.create_task(send())
            status, _, body = await read_answer(reader, wait_s=60)
            await asyncio.wait_for(sender, 60)
        grown_mib = (peak_rss_kib(server) - before) / 1024
    assert status == 431, body
    assert "MAX_REQUEST_HEADER_BYTES" in json.loads(body)["error"]
    assert grown_mib < 16, f"peak RSS grew by {grown_mib:.0f} MiB"


async def trickle(writer: asyncio.StreamWriter, head: bytes, piece: bytes) -> None:
    """A slow client: ``head``, then ``piece`` every 0.2 s (until the server closes)."""
    writer.write(head)
    with contextlib.suppress(OSError):
        for _ in range(100):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.2)


async def test_slow_headers_time_out(tmp_path: Path) -> None:
    with serving(tmp_path, REQUEST_HEADER_TIMEOUT="1") as server:
        async with connection(server) as (reader, writer):
            started = time.monotonic()

            sender = asyncio.create_task(
                trickle(writer, b"GET /healthz HTTP/1.1\r\nHost: t\r\n", b"X-A: b\r\n")
            )
            status, _, body = await read_answer(reader, wait_s=10)
            sender.cancel()
            elapsed = time.monotonic() - started
    assert status == 408, body
    assert "REQUEST_HEADER_TIMEOUT" in json.loads(body)["error"]
    assert elapsed < 5


async def test_slow_headers_of_a_kept_alive_connections_next_request_time_out(
    tmp_path: Path,
) -> None:
    # A whole request arms no timer (chatscale.server.protocol arms it after parsing, when
    # headers are left incomplete): the next request's slow headers must still time out,
    # whether they begin in the first request's packet or in a packet of their own.
    for first, rest in (
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\n", b"X-A: b\r\n"),
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", b"\r\n"),
    ):
        with serving(tmp_path, REQUEST_HEADER_TIMEOUT="1") as server:
            async with connection(server) as (reader, writer):
                started = time.monotonic()
                sender = asyncio.create_task(trickle(writer, first, rest))
                raw = await asyncio.wait_for(reader.read(-1), 10)  # until the server closes
                sender.cancel()
                elapsed = time.monotonic() - started
        answered, late = raw.split(b"HTTP/1.1 ")[1:]
        assert answered.startswith(b"200 "), raw
        assert late.startswith(b"408 "), raw
        assert b"REQUEST_HEADER_TIMEOUT" in late
        assert elapsed < 5


async def test_idle_connection_without_a_request_is_closed(tmp_path: Path) -> None:
    with serving(tmp_path, REQUEST_HEADER_TIMEOUT="1") as server:
        async with connection(server) as (reader, _):
            started = time.monotonic()
            raw = await asyncio.wait_for(reader.read(-1), 10)
    assert raw == b""  # closed without an answer: nothing was asked
    assert time.monotonic() - started < 5


async def test_slow_body_times_out(tmp_path: Path) -> None:
    with serving(tmp_path, REQUEST_BODY_TIMEOUT="1") as server:
        async with connection(server) as (reader, writer):
            started = time.monotonic()

            head = (
                b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
            sender = asyncio.create_task(trickle(writer, head, b" "))
            status, headers, body = await read_answer(reader, wait_s=10)
            sender.cancel()
            elapsed = time.monotonic() - started
    assert status == 408, body
    assert headers["content-type"] == "application/json"
    assert "REQUEST_BODY_TIMEOUT" in json.loads(body)["error"]
    assert elapsed < 5


async def test_long_answer_outlives_the_request_timeouts(tmp_path: Path) -> None:
    # The timeouts bound a request's arrival, never the answer: a 3 s event stream on a
    # kept-alive connection, then another request on it, with both timeouts at 1 s.
    env = {
        "REQUEST_HEADER_TIMEOUT": "1",
        "REQUEST_BODY_TIMEOUT": "1",
        "DEMO_TOKENS_PER_SECOND": "5",
        "DEMO_RESPONSE_TOKENS": "15",
    }
    with serving(tmp_path, **env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = (await client.post("/api/chat", json=CHAT)).json()
            events = await read_events(client, f"/api/chat/stream/{started['stream_id']}")
            again = await client.get("/api/models")
    assert events[-1].event == "done"
    assert len(events) > 10
    assert again.status_code == 200


async def test_keep_alive_timeout_is_the_setting(tmp_path: Path) -> None:
    with serving(tmp_path, HTTP_KEEP_ALIVE_TIMEOUT="1") as server:
        async with connection(server) as (reader, writer):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            started = time.monotonic()
            raw = await asyncio.wait_for(reader.read(-1), 10)  # until the server closes
    assert raw.startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < 4  # uvicorn's default of 75 s would time out here


async def test_keep_alive_counts_from_the_last_answer(tmp_path: Path) -> None:
    """The keep-alive timer runs on across requests (it is not made again per answer): a
    connection used again within the timeout stays open a whole timeout after its last
    answer, and one used by nobody is closed after it."""
    with serving(tmp_path, HTTP_KEEP_ALIVE_TIMEOUT="1") as server:
        async with connection(server) as (reader, writer):
            for _ in range(3):  # 1.8 s in all: past the first answer's timeout
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await asyncio.wait_for(reader.readexactly(length), 5)
                last = time.monotonic()
                await asyncio.sleep(0.6)
            assert not reader.at_eof()
            rest = await asyncio.wait_for(reader.read(-1), 10)  # until the server closes
            idle = time.monotonic() - last
    assert rest == b""
    assert 0.9 <= idle < 4, idle


async def test_unread_body_closes_the_connection(client: httpx.AsyncClient) -> None:
    # The abort route reads no body: the server must not drain one for ever afterwards.
    response = await client.post("/api/chat/stream/unknown/abort", content=b"x" * 100)
    assert response.status_code == 404
    assert response.headers["connection"] == "close"
    read = await client.post("/api/chat/stream/unknown/abort")
    assert "connection" not in read.headers  # no body: the connection is kept


# --- Item 10: security headers; protocol-level errors are JSON -----------------------------


async def test_security_headers_on_the_page_and_no_store_on_the_api(
    server: ServerThread, client: httpx.AsyncClient
) -> None:
    page = await client.get("/")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers.get_list("cache-control") == ["no-cache"]
    # The page's files are revalidated on every load (no mix of two releases' modules).
    script = await client.get("/static/app.js")
    assert script.headers.get_list("cache-control") == ["no-cache"]
    again = await client.get("/static/app.js", headers={"if-none-match": script.headers["etag"]})
    assert again.status_code == 304
    started = (await client.post("/api/chat", json=CHAT)).json()
    answers = [
        await client.get("/api/models"),
        await client.get("/api/nothing-here"),
        await client.get(f"/api/chat/stream/{started['stream_id']}"),
    ]
    for answer in answers:
        assert answer.headers.get_list("cache-control") == ["no-store"], answer.url
        assert answer.headers["x-content-type-options"] == "nosniff"


async def test_unparsable_requests_get_json_400(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        for request_bytes in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
            async with connection(server) as (reader, writer):
                writer.write(request_bytes)
                await writer.drain()
                status, headers, body = await read_answer(reader, wait_s=10)
            assert status == 400, request_bytes
            assert headers["content-type"] == "application/json"
            assert headers["x-content-type-options"] == "nosniff"
            assert json.loads(body)["error"] == "invalid HTTP request"


async def test_the_reported_nesting_is_a_400(client: httpx.AsyncClient) -> None:
    body = b"[" * 100_000  # the request: a 500 (RecursionError) before
    response = await client.post(
        "/api/chat", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "malformed JSON body: nested too deeply"}
