"""Stalled readers: a client that never reads its event stream holds little (no final
frame carrying the whole answer) and is dropped after SSE_STALL_TIMEOUT."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Message

from chatscale.config import load_settings
from chatscale.server.sse import EventStream, Streams, encode
from chatscale.streams import Event
from tests.server.helpers import ServerThread


async def test_a_send_that_never_completes_drops_the_stream() -> None:
    closed = asyncio.Event()
    pulled = 0

    async def frames() -> AsyncIterator[bytes]:
        nonlocal pulled
        try:
            while True:
                pulled += 1
                yield b"data: x\n\n"
        finally:
            closed.set()

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) >= 3:  # the client's window is full from the second frame on
            await asyncio.Event().wait()

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    registry = Streams()
    stream = EventStream(frames(), registry, stall_timeout_s=0.2, heartbeat_s=0.05)
    began = time.monotonic()
    await asyncio.wait_for(stream({"type": "http"}, receive, send), 5)
    assert time.monotonic() - began < 2
    assert closed.is_set() and not registry.open
    assert pulled <= 2  # nothing more was pulled while the send waited
    assert not any(m.get("more_body") is False for m in sent)  # never completed


def test_final_frames_carry_no_answer_text() -> None:
    text = "x" * 1_000_000
    done = encode(Event("9", "done", {"text": text, "finish_reason": "stop"}))
    assert len(done) < 100 and b"finish_reason" in done
    error = encode(Event("9", "error", {"text": text, "message": "boom"}))
    assert len(error) < 100 and b"boom" in error
    assert len(encode(Event("3", "delta", {"text": "abc"}))) < 60


def test_a_client_that_never_reads_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        sse_stall_timeout=1,
        demo_tokens_per_second=100_000,
        # About 6 MB of deltas: more than the kernel's socket buffers take (the send buffer
        # grows to 4 MB), so the server's sends block.
        demo_response_tokens=1_000_000,
        stream_max_bytes=64 * 1_048_576,
        stream_drain_timeout=1,
    )
    with ServerThread(settings) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            started = client.post("/api/chat", json={"message": "big"}).json()
            cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(5)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(
                f"GET /api/chat/stream/{started['stream_id']} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\nCookie: {cookie}\r\n\r\n".encode()
            )
            metrics = server.services.metrics
            for _ in range(200):
                if metrics.open_sse:
                    break
                time.sleep(0.05)
            assert metrics.open_sse == 1
            # The answer takes about 10 s; the stream goes 1 s after its send blocks.
            for _ in range(300):
                if not metrics.open_sse:
                    break
                time.sleep(0.1)
            assert metrics.open_sse == 0 and not server.services.sse.open
            assert "dropped an event stream" in caplog.text
        finally:
            sock.close()
