"""REDIS_PING_INTERVAL reaches every connection of chatscale's client, on every topology."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatscale.redis import RedisConnection, connect
from tests.conftest import redis_config
from tests.ratelimit.helpers import uri_of


async def _clients(conn: RedisConnection, name: str) -> dict[str, int]:
    """Client id → idle seconds of every connection called ``name`` (every Cluster node)."""
    client: Any = conn.client
    nodes = {"target_nodes": "all"} if conn.is_cluster else {}
    listed = await client.client_list(**nodes)
    clients = [c for n in listed.values() for c in n] if isinstance(listed, dict) else listed
    return {f"{c['laddr']}/{c['id']}": int(c["idle"]) for c in clients if c.get("name") == name}


@pytest.mark.timeout(30)
async def test_ping_interval_reaches_every_connection(redis_conn: RedisConnection) -> None:
    before = await _clients(redis_conn, "chatscale")
    config = redis_config(
        uri_of(redis_conn.config), prefix=redis_conn.keys.prefix, redis_ping_interval=1
    )
    async with await connect(config) as pinged:
        await pinged.client.set(pinged.keys.key("k"), b"1")  # its connections now sit idle
        await asyncio.sleep(3.5)
        after = await _clients(redis_conn, "chatscale")
    idle = {key: seconds for key, seconds in after.items() if key not in before}
    # Pinged every second, the Cluster's discovery connection included.
    assert idle and max(idle.values()) <= 1, idle
