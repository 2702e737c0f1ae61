"""The chat view's real answers match /openapi.json (tests/server/openapi_answers.py says
how). (schemathesis fuzzes the route too, but its random stream ids rarely reach an answer
that exists.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from chatscale.config import load_settings
from chatscale.server.openapi_durable import PATH
from tests.server.helpers import ServerThread
from tests.server.openapi_answers import Document


@pytest.fixture
def server() -> Iterator[ServerThread]:
    # A slow answer (about 2 s) and short long-polls: both kinds of 204 and of 200 happen.
    settings = load_settings(
        durable_streams=True,
        durable_streams_auth="none",
        durable_streams_long_poll_timeout=0.2,
        demo_tokens_per_second=2,
        demo_response_tokens=4,
    )
    with ServerThread(settings) as running:
        yield running


async def test_every_answer_of_the_chat_view_is_documented(
    client: httpx.AsyncClient,
) -> None:
    doc = Document((await client.get("/openapi.json")).json(), PATH)
    started = (await client.post("/api/chat", json={"message": "hello"})).json()
    url = f"/api/chat/stream/{started['stream_id']}/durable"
    assert "stream-closed" not in doc.check(await client.head(url)).headers
    # Follow live from the tail until the answer ends: 204s (nothing within the long-poll
    # timeout) and 200s with the events, each with a cursor.
    offset, cursors, closed = "now", 0, False
    async with asyncio.timeout(20):
        while not closed:
            answer = doc.check(
                await client.get(url, params={"offset": offset, "live": "long-poll"})
            )
            offset = answer.headers["stream-next-offset"]
            cursors += "stream-cursor" in answer.headers
            closed = answer.headers.get("stream-closed") == "true"
    assert cursors > 1
    ended = doc.check(await client.get(url, params={"offset": offset, "live": "long-poll"}))
    assert (ended.status_code, ended.headers["stream-closed"]) == (204, "true")
    whole = doc.check(await client.get(url, params={"offset": "-1"}))
    assert whole.json()[-1]["type"] == "done"
    assert whole.headers["etag"].endswith(':c"')
    first = json.loads(whole.text)[0]["id"]
    part = doc.check(await client.get(url, params={"offset": f"{int(first):016d}_{0:016d}"}))
    assert part.json() == whole.json()[1:]
    doc.check(await client.get(url, params={"offset": "now"}))
    async with client.stream("GET", url, params={"offset": "-1", "live": "sse"}) as sse:
        await sse.aread()  # the answer is closed: the stream ends after its events
        doc.check(sse)
        assert '"streamClosed":true' in sse.text
    assert doc.check(await client.head(url)).headers["stream-closed"] == "true"
    # Refusals: JSON errors (bodiless on HEAD) of the documented statuses.
    for params in ({"live": "sse"}, {"offset": "0000000000000001_0000000000000005"}):
        doc.check(await client.get(url, params=params))
        doc.check(await client.head(url, params=params))
    doc.check(await client.get(url, params={"offset": "0000000000000099_0000000000000000"}))
    doc.check(await client.get(url, headers={"X-Resume-Token": "forged"}))
    doc.check(await client.get("/api/chat/stream/unknown/durable"))
    doc.check(await client.head("/api/chat/stream/unknown/durable"))
    assert {(m, s) for m, s, _ in doc.seen} == {
        ("HEAD", 200),
        ("GET", 200),
        ("GET", 204),
        ("GET", 400),
        ("HEAD", 400),
        ("GET", 403),
        ("GET", 404),
        ("HEAD", 404),
    }
    assert ("GET", 200, "text/event-stream") in doc.seen
