"""Per-user limits cannot be bypassed by minting sessions: anonymous sessions count against
their client address (CHAT_RATE_LIMIT, CHAT_CONCURRENCY_LIMIT), and creating sessions is
itself rate limited per address (SESSION_CREATE_LIMIT). In memory and on Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from chatscale.config import Settings, load_settings
from chatscale.redis import RedisConnection
from tests.conftest import TOPOLOGIES
from tests.ratelimit.helpers import uri_of
from tests.server.helpers import ServerThread
from tests.server.rig import SECRET

SESSIONS = 50


@pytest.fixture(params=[pytest.param("memory", id="memory"), *TOPOLOGIES])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides selecting the memory backends or one real Redis topology."""
    if request.param == "memory":
        return {}
    conn: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
    return {
        "use_redis": True,
        "redis_uri": uri_of(conn.config),
        "session_secret": SECRET,
        "redis_key_prefix": conn.keys.prefix or None,
    }


def _settings(backend: dict[str, Any], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ban_violation_limit": 0,  # refusals stay 429s (bans are tested elsewhere)
        "stream_drain_timeout": 1,
        "session_create_limit": "1000/minute",
        **backend,
        **overrides,
    }
    return load_settings(**values)


async def _minted(url: str, count: int) -> list[httpx.AsyncClient]:
    """``count`` clients, each holding a fresh session of its own (a returning cookie)."""
    clients = [httpx.AsyncClient(base_url=url, timeout=15) for _ in range(count)]
    for client in clients:
        response = await client.get("/api/conversations")
        assert response.status_code == 200, response.text
        assert client.cookies, "expected a session cookie"
    return clients


@pytest.mark.parametrize("limit", ["rate", "concurrency"])
async def test_minted_sessions_share_their_address_limits(
    backend: dict[str, Any], limit: str
) -> None:
    if limit == "rate":
        settings = _settings(
            backend,
            chat_rate_limit="5/minute",
            chat_concurrency_limit=0,
            demo_tokens_per_second=1000,
            demo_response_tokens=2,
        )
        allowed = 5
    else:
        settings = _settings(
            backend,
            chat_rate_limit="1000/minute",
            chat_concurrency_limit=2,
            demo_tokens_per_second=2,  # answers run for a minute: their slots stay taken
            demo_response_tokens=120,
        )
        allowed = 2
    with ServerThread(settings) as server:
        clients = await _minted(server.url, SESSIONS)
        try:
            answers = [await c.post("/api/chat", json={"message": "hi"}) for c in clients]
            statuses = [a.status_code for a in answers]
            assert statuses.count(202) == allowed, statuses
            assert set(statuses) == {202, 429}, statuses
            refused = next(a for a in answers if a.status_code == 429)
            assert int(refused.headers["Retry-After"]) >= 1
            assert "error" in refused.json()
            for client, answer in zip(clients, answers, strict=True):
                if answer.status_code == 202:
                    stream = answer.json()["stream_id"]
                    await client.post(f"/api/chat/stream/{stream}/abort")
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))


async def test_creating_sessions_is_rate_limited_per_address(backend: dict[str, Any]) -> None:
    settings = _settings(backend, session_create_limit="5/minute")
    with ServerThread(settings) as server:
        clients = await _minted(server.url, 5)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as sixth:
                refused = await sixth.get("/api/conversations")
                assert refused.status_code == 429, refused.text
                assert "SESSION_CREATE_LIMIT" in refused.json()["error"]
                assert int(refused.headers["Retry-After"]) >= 1
                assert "set-cookie" not in refused.headers
                # Nor does a POST create one.
                chat = await sixth.post("/api/chat", json={"message": "hi"})
                assert chat.status_code == 429
            # Returning sessions are not affected.
            for client in clients:
                assert (await client.get("/api/conversations")).status_code == 200
            # Another address is counted on its own.
            transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
            async with httpx.AsyncClient(
                base_url=server.url, timeout=15, transport=transport
            ) as elsewhere:
                assert (await elsewhere.get("/api/conversations")).status_code == 200
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
