"""The protocol's real answers match /openapi.json (tests/server/openapi_answers.py says
how), at the configured DURABLE_STREAMS_PATH: each kind of answer once, refusals included.
(schemathesis fuzzes the routes too: tests/server/test_schemathesis.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from chatscale.config import load_settings
from tests.server.helpers import ServerThread
from tests.server.openapi_answers import Document

BASE = "/streams/v2"
READ = "protocol-openapi-read-token"
WRITE = "protocol-openapi-write-token"


@pytest.fixture
def server() -> Iterator[ServerThread]:
    settings = load_settings(
        durable_streams=True,
        durable_streams_path=BASE,
        durable_streams_read_tokens=READ,
        durable_streams_write_tokens=WRITE,
        durable_streams_long_poll_timeout=0.2,
        durable_streams_sse_duration=1,
    )
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
async def writer(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {WRITE}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=headers) as http:
        yield http


async def test_every_kind_of_answer_of_the_protocol_is_documented(
    writer: httpx.AsyncClient,
) -> None:
    document = (await writer.get("/openapi.json")).json()
    assert not [p for p in document["paths"] if p.startswith("/v1/stream")]
    doc = Document(document, BASE + "/{name}")
    url = f"{BASE}/orders"
    json_type = {"Content-Type": "application/json"}

    created = doc.check(await writer.put(url, headers=json_type, content=b'[{"n":1}]'))
    assert created.status_code == 201
    assert created.headers["location"].endswith(url)
    assert doc.check(await writer.put(url, headers=json_type)).status_code == 200
    conflict = doc.check(await writer.put(url, headers={"Content-Type": "text/plain"}))
    assert conflict.status_code == 409
    assert (
        doc.check(await writer.post(url, headers=json_type, content=b'{"n":2}')).status_code == 204
    )
    producer = {**json_type, "Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "0"}
    stored = doc.check(await writer.post(url, headers=producer, content=b'{"n":3}'))
    assert (stored.status_code, stored.headers["producer-seq"]) == (200, "0")
    mismatch = doc.check(
        await writer.post(url, headers={"Content-Type": "text/plain"}, content=b"x")
    )
    assert mismatch.status_code == 409 and "does not match" in mismatch.json()["error"]

    read = doc.check(await writer.get(url, params={"offset": "-1"}))
    assert (read.status_code, read.json()) == (200, [{"n": 1}, {"n": 2}, {"n": 3}])
    again = await writer.get(
        url, params={"offset": "-1"}, headers={"If-None-Match": read.headers["etag"]}
    )
    assert doc.check(again).status_code == 304
    tail = read.headers["stream-next-offset"]
    assert doc.check(await writer.get(url, params={"offset": "now"})).json() == []
    waited = doc.check(await writer.get(url, params={"offset": tail, "live": "long-poll"}))
    assert waited.status_code == 204
    async with writer.stream("GET", url, params={"offset": "-1", "live": "sse"}) as sse:
        await sse.aread()  # until DURABLE_STREAMS_SSE_DURATION ends it
        doc.check(sse)
        assert "event: control" in sse.text
    head = doc.check(await writer.head(url))
    assert (head.status_code, head.headers["stream-next-offset"]) == (200, tail)

    for offset in ("12", "", "0000000000000001_0000000000000001"):
        bad = doc.check(await writer.get(url, params={"offset": offset}))
        assert bad.status_code == 400 and "offset" in bad.json()["error"]
    assert doc.check(await writer.get(f"{BASE}/missing")).status_code == 404
    assert doc.check(await writer.head(f"{BASE}/missing")).status_code == 404
    anonymous = doc.check(await writer.get(url, headers={"Authorization": ""}))
    assert anonymous.status_code == 401
    as_reader = doc.check(
        await writer.post(url, headers={**json_type, "Authorization": f"Bearer {READ}"})
    )
    assert as_reader.status_code == 403
    assert doc.check(await writer.options(url)).status_code == 204

    close = {**json_type, "Stream-Closed": "true"}
    assert doc.check(await writer.post(url, headers=close)).headers["stream-closed"] == "true"
    closed = doc.check(await writer.post(url, headers=json_type, content=b"{}"))
    assert (closed.status_code, closed.headers["stream-closed"]) == (409, "true")
    assert doc.check(await writer.delete(url)).status_code == 204
    assert doc.check(await writer.get(url)).status_code == 404
    assert {(m, s) for m, s, _ in doc.seen} == {
        ("PUT", 201),
        ("PUT", 200),
        ("PUT", 409),
        ("POST", 200),
        ("POST", 204),
        ("POST", 403),
        ("POST", 409),
        ("GET", 200),
        ("GET", 204),
        ("GET", 304),
        ("GET", 400),
        ("GET", 401),
        ("GET", 404),
        ("HEAD", 200),
        ("HEAD", 404),
        ("OPTIONS", 204),
        ("DELETE", 204),
    }
    assert ("GET", 200, "text/event-stream") in doc.seen
