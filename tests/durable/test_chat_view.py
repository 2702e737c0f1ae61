"""Chat answers read as Durable Streams (read-only, JSON mode, one message per event), with
the chat API's owner checks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from chatscale.config import load_settings
from tests.server.helpers import ServerThread


@pytest.fixture
def server() -> Iterator[ServerThread]:
    settings = load_settings(
        durable_streams=True,
        durable_streams_auth="none",
        durable_streams_long_poll_timeout=2,
        demo_tokens_per_second=40,
        demo_response_tokens=20,
    )
    with ServerThread(settings) as running:
        yield running


async def test_an_answer_reads_as_a_json_stream(client: httpx.AsyncClient) -> None:
    started = (await client.post("/api/chat", json={"message": "hello"})).json()
    url = f"/api/chat/stream/{started['stream_id']}/durable"
    first = await client.get(url, params={"offset": "-1", "live": "long-poll"})
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    messages = first.json()
    offset = first.headers["stream-next-offset"]
    # Follow live until the stream is closed, then read it all again in one catch-up.
    while "stream-closed" not in first.headers:
        first = await client.get(url, params={"offset": offset, "live": "long-poll"})
        if first.status_code == 200:
            messages += first.json()
        offset = first.headers["stream-next-offset"]
    assert [m["id"] for m in messages] == [str(i) for i in range(1, len(messages) + 1)]
    assert messages[-1]["type"] == "done" and "text" not in messages[-1]["data"]
    whole = await client.get(url, params={"offset": "-1"})
    assert whole.json() == messages
    assert whole.headers["stream-closed"] == "true"
    assert whole.headers["stream-next-offset"] == offset
    head = await client.head(url)
    assert (head.status_code, head.headers["stream-closed"]) == (200, "true")
    # Read-only: no append.
    assert (await client.post(url, content=b"[1]")).status_code == 405


async def test_sse_and_owner_checks(client: httpx.AsyncClient, server: ServerThread) -> None:
    started = (await client.post("/api/chat", json={"message": "hi"})).json()
    url = f"/api/chat/stream/{started['stream_id']}/durable"
    async with client.stream("GET", url, params={"offset": "-1", "live": "sse"}) as sse:
        assert sse.headers["content-type"] == "text/event-stream"
        text = ""
        async with asyncio.timeout(10):
            async for chunk in sse.aiter_text():
                text += chunk
        assert "event: data" in text
        assert '"streamClosed":true' in text
    # Another session (another user) cannot read it: the same 404 as the chat API's.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as stranger:
        refused = await stranger.get(url, params={"offset": "-1"})
        assert refused.status_code == 404
        assert refused.json()["error"] == "stream not found"
    bad = await client.get(url, params={"offset": "0000000000000001_0000000000000005"})
    assert bad.status_code == 400
    assert "offset" in bad.json()["error"]
