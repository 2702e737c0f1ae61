"""The protocol's routes as a client sees them: tokens, bad input (a 4xx with a JSON body
naming what was wrong), and, on Redis, several instances serving one stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chatscale.config import load_settings
from tests.conftest import unique_prefix
from tests.server.helpers import ServerThread

READ, WRITE = "read-token-0123456789", "write-token-0123456789"
BASE = "/v1/stream"


def durable_settings(**overrides: Any) -> Any:
    return load_settings(
        durable_streams=True,
        durable_streams_read_tokens=READ,
        durable_streams_write_tokens=WRITE,
        durable_streams_long_poll_timeout=2,
        durable_streams_max_body=1024,
        **overrides,
    )


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(durable_settings()) as running:
        yield running


def auth(token: str = WRITE) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_routes_need_a_token(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        answer = http.put(f"{BASE}/a", headers={"Content-Type": "text/plain"})
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "bearer token" in answer.json()["error"]
        wrong = http.get(f"{BASE}/a", headers=auth("not-a-token-at-all-0123"))
        assert wrong.status_code == 401
        reader = http.put(f"{BASE}/a", headers={**auth(READ), "Content-Type": "text/plain"})
        assert reader.status_code == 403
        assert "only read" in reader.json()["error"]
        created = http.put(
            f"{BASE}/a", headers={**auth(), "Content-Type": "text/plain"}, content=b"hi"
        )
        assert created.status_code == 201
        read = http.get(f"{BASE}/a", headers=auth(READ))
        assert (read.status_code, read.text) == (200, "hi")
        # A preflight carries no token: it is answered without one.
        preflight = http.options(f"{BASE}/a", headers={"Origin": "https://example.com"})
        assert preflight.status_code == 204
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()


def test_a_created_streams_location_is_percent_encoded(server: ServerThread) -> None:
    """A name outside latin-1 (or with a `%`) in Location: it was a 500 after the stream
    was created (found by schemathesis)."""
    with httpx.Client(base_url=server.url, timeout=5) as http:
        for name in ("caf\u00e9/\U0002a168 x", "100%25"):
            url = f"{BASE}/{name}"
            created = http.put(url, headers={**auth(), "Content-Type": "text/plain"})
            assert created.status_code == 201, created.text
            location = created.headers["location"]
            assert location.isascii()
            assert location == str(http.base_url.join(httpx.URL(url).raw_path.decode()))
            assert http.head(location, headers=auth()).status_code == 200


def test_protocol_answers_pass_the_common_layers(server: ServerThread) -> None:
    """The protocol's requests skip Starlette's router (a lane of their own) but not the
    layers every request passes: request id, instance, security headers, the origin check
    on writes, and the body bound."""
    with httpx.Client(base_url=server.url, timeout=5) as http:
        plain = {**auth(), "Content-Type": "text/plain"}
        created = http.put(f"{BASE}/lane", headers={**plain, "X-Request-ID": "lane-test-1"})
        assert created.status_code == 201
        assert created.headers["x-request-id"] == "lane-test-1"
        assert created.headers["x-chatscale-instance"]
        assert created.headers["x-content-type-options"] == "nosniff"
        assert created.headers["access-control-allow-origin"] == "*"
        foreign = http.post(
            f"{BASE}/lane", headers={**plain, "Origin": "https://elsewhere.example"}, content=b"x"
        )
        assert foreign.status_code == 403
        assert "cross-origin" in foreign.json()["error"]
        too_big = http.post(f"{BASE}/lane", headers=plain, content=b"x" * 2048)
        assert too_big.status_code == 413
        assert "DURABLE_STREAMS_MAX_BODY" in too_big.json()["error"]
        read = http.get(f"{BASE}/lane", headers=auth(READ))
        assert (read.status_code, read.text) == (200, "")
        # The base path itself is no stream: the application's own 404.
        assert http.get(BASE, headers=auth(READ)).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "named"),
    [
        ("PUT", "/a", {"Stream-TTL": "01"}, b"", 400, "Stream-TTL"),
        (
            "PUT",
            "/a",
            {"Stream-TTL": "5", "Stream-Expires-At": "2030-01-01T00:00:00Z"},
            b"",
            400,
            "together",
        ),
        ("PUT", "/a", {"Stream-Expires-At": "tomorrow"}, b"", 400, "Stream-Expires-At"),
        ("PUT", "/a", {"Stream-Closed": "maybe"}, b"", 400, "Stream-Closed"),
        ("PUT", "/a/%2E%2E/b", {}, b"", 400, "segments"),
        ("PUT", "/a%01b", {}, b"", 400, "control characters"),
        ("PUT", "/j", {"Content-Type": "application/json"}, b"{nope", 400, "not valid JSON"),
        ("PUT", "/j", {"Content-Type": "application/json"}, b"NaN", 400, "not valid JSON"),
        (
            "PUT",
            "/big",
            {"Content-Type": "text/plain"},
            b"x" * 2000,
            413,
            "DURABLE_STREAMS_MAX_BODY",
        ),
        (
            "PUT",
            "/f",
            {"Stream-Fork-Offset": "0000000000000000_0000000000000000"},
            b"",
            400,
            "Stream-Forked-From",
        ),
        ("POST", "/s", {"Content-Type": "text/plain"}, b"", 400, "empty"),
        ("POST", "/s", {}, b"x", 400, "Content-Type"),
        ("POST", "/s", {"Content-Type": "text/plain", "Producer-Id": "p"}, b"x", 400, "together"),
        (
            "POST",
            "/s",
            {
                "Content-Type": "text/plain",
                "Producer-Id": "p",
                "Producer-Epoch": "-1",
                "Producer-Seq": "0",
            },
            b"x",
            400,
            "Producer-Epoch",
        ),
        (
            "POST",
            "/s",
            {
                "Content-Type": "text/plain",
                "Producer-Id": "p",
                "Producer-Epoch": "0",
                "Producer-Seq": "9007199254740992",
            },
            b"x",
            400,
            "Producer-Seq",
        ),
        ("GET", "/s?offset=abc", {}, b"", 400, "offset"),
        # A trailing newline is no offset (``$`` alone would let it through).
        ("GET", "/s?offset=0000000000000000_0000000000000000%0A", {}, b"", 400, "offset"),
        ("GET", "/s?offset=-1&offset=now", {}, b"", 400, "more than once"),
        ("GET", "/s?live=sse", {}, b"", 400, "offset parameter"),
        ("GET", "/s?offset=-1&live=forever", {}, b"", 400, "long-poll or sse"),
        ("GET", "/missing", {}, b"", 404, "no such stream"),
        ("PATCH", "/s", {}, b"", 405, "PATCH"),
    ],
)
def test_bad_requests_are_named(
    server: ServerThread,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    named: str,
) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        http.put(f"{BASE}/s", headers={**auth(), "Content-Type": "text/plain"})
        answer = http.request(method, BASE + path, headers={**auth(), **headers}, content=body)
        assert answer.status_code == status, answer.text
        assert named in answer.json()["error"]
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_writes_over_the_write_rate_limit_are_429() -> None:
    settings = durable_settings(durable_streams_write_rate_limit="3/minute")
    plain = {"Content-Type": "text/plain"}
    with ServerThread(settings) as running, httpx.Client(base_url=running.url, timeout=5) as http:
        assert http.put(f"{BASE}/w", headers={**auth(), **plain}).status_code == 201
        for n in range(2):
            posted = http.post(f"{BASE}/w", headers={**auth(), **plain}, content=b"x")
            assert posted.status_code == 204, (n, posted.text)
        refused = http.post(f"{BASE}/w", headers={**auth(), **plain}, content=b"x")
        assert refused.status_code == 429
        assert "DURABLE_STREAMS_WRITE_RATE_LIMIT" in refused.json()["error"]
        assert int(refused.headers["retry-after"]) >= 1
        # Reads are not limited, and the refused append stored nothing.
        read = http.get(f"{BASE}/w", headers=auth(READ))
        assert (read.status_code, read.text) == (200, "xx")
        # A read token's write is refused by the token check (403), before any counting.
        assert http.delete(f"{BASE}/w", headers=auth(READ)).status_code == 403


# --- several instances on one Redis -------------------------------------------------------

TOPOLOGIES = [
    pytest.param("standalone", id="standalone"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
]


@pytest.fixture(params=TOPOLOGIES)
def two_instances(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    if request.param == "standalone":
        uri = str(request.getfixturevalue("redis_standalone").url())
    else:
        uri = ",".join(request.getfixturevalue("redis_cluster").urls())
    settings = durable_settings(
        use_redis=True,
        redis_uri=uri,
        redis_key_prefix=unique_prefix(),
        session_secret="durable-http-test-secret-0123456789abcdef",
    )
    with ServerThread(settings) as one, ServerThread(settings) as two:
        yield one.url, two.url


async def test_write_rate_limit_holds_across_instances(
    request: pytest.FixtureRequest,
) -> None:
    uri = str(request.getfixturevalue("redis_standalone").url())
    settings = durable_settings(
        use_redis=True,
        redis_uri=uri,
        redis_key_prefix=unique_prefix(),
        session_secret="durable-http-test-secret-0123456789abcdef",
        durable_streams_write_rate_limit="4/minute",
    )
    plain = {"Content-Type": "text/plain"}
    with ServerThread(settings) as one, ServerThread(settings) as two:
        async with httpx.AsyncClient(timeout=10, headers=auth()) as http:
            statuses = [(await http.put(f"{one.url}{BASE}/limited", headers=plain)).status_code]
            for n in range(4):
                url = (one.url, two.url)[n % 2] + f"{BASE}/limited"
                statuses.append((await http.post(url, headers=plain, content=b"x")).status_code)
    # Four writes in all, whichever instance took them: the fifth is refused.
    assert statuses == [201, 204, 204, 204, 429]


async def test_instances_share_streams(two_instances: tuple[str, str]) -> None:
    one, two = two_instances
    url = f"{BASE}/shared"
    async with httpx.AsyncClient(timeout=10, headers=auth()) as http:
        created = await http.put(one + url, headers={"Content-Type": "text/plain"}, content=b"a")
        assert created.status_code == 201
        # Read-your-writes on the other instance.
        appended = await http.post(two + url, headers={"Content-Type": "text/plain"}, content=b"b")
        assert appended.status_code == 204
        read = await http.get(one + url)
        assert read.text == "ab"
        tail = read.headers["stream-next-offset"]
        assert appended.headers["stream-next-offset"] == tail

        # A long-poll on one instance is woken by an append on the other.
        async def append_later() -> None:
            await asyncio.sleep(0.3)
            await http.post(two + url, headers={"Content-Type": "text/plain"}, content=b"c")

        waiter = asyncio.create_task(
            http.get(one + url, params={"offset": tail, "live": "long-poll"})
        )
        await append_later()
        polled = await waiter
        assert (polled.status_code, polled.text) == (200, "c")


async def test_producer_retries_on_two_instances_store_once(two_instances: tuple[str, str]) -> None:
    one, two = two_instances
    url = f"{BASE}/producer"
    async with httpx.AsyncClient(timeout=10, headers=auth()) as http:
        await http.put(one + url, headers={"Content-Type": "text/plain"})
        for seq in range(20):
            headers = {
                "Content-Type": "text/plain",
                "Producer-Id": "p1",
                "Producer-Epoch": "0",
                "Producer-Seq": str(seq),
            }
            # The same batch sent to both instances at once (a retry racing the original).
            answers = await asyncio.gather(
                *(
                    http.post(base + url, headers=headers, content=f"{seq},".encode())
                    for base in (one, two)
                )
            )
            assert sorted(a.status_code for a in answers) == [200, 204]
        read = await http.get(two + url)
        assert read.text == "".join(f"{seq}," for seq in range(20))
        # A zombie of an older epoch is fenced on either instance.
        await http.post(
            one + url,
            headers={
                "Content-Type": "text/plain",
                "Producer-Id": "p1",
                "Producer-Epoch": "1",
                "Producer-Seq": "0",
            },
            content=b"new",
        )
        zombie = await http.post(
            two + url,
            headers={
                "Content-Type": "text/plain",
                "Producer-Id": "p1",
                "Producer-Epoch": "0",
                "Producer-Seq": "20",
            },
            content=b"old",
        )
        assert zombie.status_code == 403
        assert zombie.headers["producer-epoch"] == "1"


async def test_memory_drops_expired_streams_nobody_reads() -> None:
    from chatscale.durable.memory import MemoryStore
    from chatscale.durable.model import CreateRequest

    store = MemoryStore()
    request = CreateRequest("text/plain", 1, None, None, closed=False, body=b"x", fork=None)
    await store.create("short", request)
    await asyncio.sleep(1.1)
    store._swept_ms = 0  # the next create sweeps
    await store.create("other", CreateRequest("text/plain", None, None, None, False, b"", None))
    assert set(store._streams) == {"other"}


async def test_sse_cursor_comes_from_the_request_not_the_last_event(server: ServerThread) -> None:
    """Each control event's cursor is derived from the request's cursor: derived from the
    previous event's, the collision jitter pushed it further ahead at every event."""
    plain = {**auth(), "Content-Type": "text/plain"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        assert (await client.put(f"{BASE}/cursors", headers=plain)).status_code == 201
        cursors: list[int] = []
        params = {"offset": "-1", "live": "sse"}
        async with client.stream(
            "GET", f"{BASE}/cursors", params=params, headers=auth(READ)
        ) as events:
            lines = events.aiter_lines()
            for n in range(6):
                await client.post(f"{BASE}/cursors", headers=plain, content=f"m{n}".encode())
                while True:
                    line = await asyncio.wait_for(anext(lines), 5)
                    if line.startswith("data:") and "streamCursor" in line:
                        cursors.append(int(json.loads(line[5:])["streamCursor"]))
                        break
    assert len(cursors) == 6
    # The same interval number throughout (one more if a 20 s interval ended meanwhile).
    assert max(cursors) - min(cursors) <= 1, cursors


@pytest.mark.parametrize("cursor", ["³", "١٢٣", "1²"])
async def test_a_cursor_of_other_digits_is_not_a_number(server: ServerThread, cursor: str) -> None:
    """``str.isdigit`` is true of them, ``int`` refuses some: an SSE answer broke after its
    head (found by schemathesis). They are cursors from elsewhere: the current interval."""
    plain = {**auth(), "Content-Type": "text/plain"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        assert (await client.put(f"{BASE}/digits", headers=plain, content=b"a")).status_code in (
            200,
            201,
        )
        params = {"offset": "-1", "live": "long-poll", "cursor": cursor}
        polled = await client.get(f"{BASE}/digits", params=params, headers=auth(READ))
        assert polled.status_code == 200 and polled.headers["stream-cursor"].isascii()
        params = {"offset": "now", "live": "sse", "cursor": cursor}
        async with client.stream(
            "GET", f"{BASE}/digits", params=params, headers=auth(READ)
        ) as events:
            lines = events.aiter_lines()
            while True:
                line = await asyncio.wait_for(anext(lines), 5)
                if line.startswith("data:") and "streamCursor" in line:
                    assert json.loads(line[5:])["streamCursor"].isdigit()
                    break
