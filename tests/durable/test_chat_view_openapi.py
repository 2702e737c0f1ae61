"""The chat view's real answers match /openapi.json: every status is documented, required
headers are there, every documented header's value fits its schema, the content type is a
documented one and a JSON body fits its schema. (schemathesis fuzzes the route too, but its
random stream ids rarely reach an answer that exists.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest

from chatscale.config import load_settings
from chatscale.server.openapi_durable import PATH
from tests.server.helpers import ServerThread


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


class Document:
    """The served /openapi.json, and checks of answers against it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: set[tuple[str, int, str]] = set()

    def _valid(self, schema: dict[str, Any], value: Any) -> bool:
        # $refs point into the document's components.
        return jsonschema_rs.validator_for(
            {**schema, "components": self.document["components"]}
        ).is_valid(value)

    def check(self, response: httpx.Response) -> httpx.Response:
        method = response.request.method
        operation = self.document["paths"][PATH][method.lower()]
        status = response.status_code
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} answered {status}: not documented"
        for name, header in documented.get("headers", {}).items():
            value = response.headers.get(name)
            if value is None:
                assert not header.get("required"), f"{method} {status} lacks {name}"
            else:
                assert self._valid(header["schema"], value), f"{name}: {value!r}"
        content = documented.get("content", {})
        kind = response.headers.get("content-type", "").split(";")[0]
        if method == "HEAD" or status == 204:
            assert response.content == b""
        else:
            assert kind in content, f"{method} {status} answered {kind}"
        if kind == "application/json" and response.content:
            assert self._valid(content[kind]["schema"], response.json()), response.text
        self.seen.add((method, status, kind))
        return response


async def test_every_answer_of_the_chat_view_is_documented(
    client: httpx.AsyncClient,
) -> None:
    doc = Document((await client.get("/openapi.json")).json())
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
        doc.check(sse)
        assert '"streamClosed":true' in "".join([chunk async for chunk in sse.aiter_text()])
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
