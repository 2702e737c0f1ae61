"""A ``POST /api/chat`` that fails half way and is retried with the same ``client_request_id``
stores the user's message once (memory and Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chatscale.config import load_settings
from tests.conftest import unique_prefix
from tests.server.helpers import ServerThread, read_events
from tests.server.rig import SECRET


@pytest.fixture(params=["memory", "redis"])
def served(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """The server on memory backends, then on the shared standalone Redis (own prefix)."""
    options: dict[str, Any] = {"demo_tokens_per_second": 500, "demo_response_tokens": 5}
    if request.param == "redis":
        redis = request.getfixturevalue("redis_standalone")
        options |= {
            "use_redis": True,
            "redis_uri": redis.url(),
            "redis_key_prefix": unique_prefix(),
            "session_secret": SECRET,
        }
    with ServerThread(load_settings(**options)) as server:
        yield server


def fail_next_create(server: ServerThread) -> list[str]:
    """Make the stream manager's next ``create`` fail (after the user's message is stored).

    Returns the list the failure is recorded in. The wrapper runs on the server's loop.
    """
    manager = server.services.streams
    original = manager.create
    failed: list[str] = []

    async def create(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append("create")
            raise RuntimeError("injected: the stream manager is unavailable")
        return await original(*args, **kwargs)

    manager.create = create
    return failed


async def _answered(client: httpx.AsyncClient, conversation_id: str, count: int) -> Any:
    for _ in range(200):
        found = (await client.get(f"/api/conversations/{conversation_id}")).json()
        if len(found["messages"]) >= count and found["messages"][-1]["role"] == "assistant":
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"the answer was never stored: {found}")


async def _send_failing_then_retry(
    server: ServerThread, client: httpx.AsyncClient, body: dict[str, Any]
) -> dict[str, Any]:
    failed = fail_next_create(server)
    first = await client.post("/api/chat", json=body)
    assert failed == ["create"]
    assert first.status_code == 500, first.text
    assert "error" in first.json()
    retried = await client.post("/api/chat", json=body)
    assert retried.status_code == 202, retried.text
    started: dict[str, Any] = retried.json()
    events = await read_events(client, f"/api/chat/stream/{started['stream_id']}")
    assert events[-1].event == "done"
    return started


async def test_a_retried_first_message_is_stored_once(served: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=15) as client:
        # A session first, as the page has: a failed request's answer sets no cookie.
        assert (await client.get("/api/conversations")).json() == {"conversations": []}
        body = {"message": "only once please", "client_request_id": "req-retry-1"}
        started = await _send_failing_then_retry(served, client, body)
        found = await _answered(client, started["conversation_id"], 2)
        assert [(m["role"], m["content"]) for m in found["messages"]][:1] == [
            ("user", "only once please")
        ]
        assert [m["role"] for m in found["messages"]] == ["user", "assistant"]
        listed = (await client.get("/api/conversations")).json()["conversations"]
        assert [c["id"] for c in listed] == [started["conversation_id"]]
        # The retried request stays idempotent once it succeeded.
        again = (await client.post("/api/chat", json=body)).json()
        assert again["stream_id"] == started["stream_id"]


async def test_a_retried_follow_up_is_stored_once(served: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=15) as client:
        first = (await client.post("/api/chat", json={"message": "first"})).json()
        conversation_id = first["conversation_id"]
        await _answered(client, conversation_id, 2)
        body = {
            "message": "second",
            "conversation_id": conversation_id,
            "client_request_id": "req-retry-2",
        }
        started = await _send_failing_then_retry(served, client, body)
        assert started["conversation_id"] == conversation_id
        found = await _answered(client, conversation_id, 4)
        assert [(m["role"], m["content"]) for m in found["messages"] if m["role"] == "user"] == [
            ("user", "first"),
            ("user", "second"),
        ]
        assert [m["role"] for m in found["messages"]] == ["user", "assistant"] * 2
