"""Redis going away: readiness turns false and requests answer 503 (not 500), then the
server recovers by itself when Redis is back."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from chatscale.config import load_settings
from tests.server.helpers import ServerThread, read_events
from tests.server.rig import SECRET


@pytest.mark.slow
async def test_redis_outage_is_503_then_recovers(standalone_factory: Any) -> None:
    redis = standalone_factory()
    settings = load_settings(
        use_redis=True,
        redis_uri=redis.url(),
        session_secret=SECRET,
        redis_retry_max_attempts=1,
        redis_connect_timeout=500,
        redis_socket_timeout=1000,
        demo_tokens_per_second=500,
        demo_response_tokens=5,
    )
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            started = (await client.post("/api/chat", json={"message": "before"})).json()
            await read_events(client, f"/api/chat/stream/{started['stream_id']}")
            await asyncio.to_thread(redis.kill)
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and "redis" in ready.json()["error"]
            down = await client.get("/api/conversations")
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "storage temporarily unavailable; retry"
            assert down.headers["Retry-After"] == "1"
            await asyncio.to_thread(redis.restart)
            for _ in range(100):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            statuses = []
            for _ in range(50):  # pools reconnect on their next use
                back = await client.post("/api/chat", json={"message": "after"})
                statuses.append(back.status_code)
                if back.status_code == 202:
                    break
                assert back.status_code == 503, back.text
                await asyncio.sleep(0.1)
            assert statuses[-1] == 202, statuses
