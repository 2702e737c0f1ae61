"""The pub/sub hub on Cluster subscribes many channels of one node at once (found by the
Durable Streams conformance run: one SSUBSCRIBE naming channels of several slots failed
with CROSSSLOT and dropped the connection in a loop)."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from chatscale.redis import RedisConnection
from chatscale.streams.redis_hub import Hub, Listener

pytestmark = pytest.mark.cluster


async def test_channels_of_many_slots_on_one_node(cluster_conn: RedisConnection) -> None:
    client = cluster_conn.client
    hub = Hub(client, probe_s=2.0, idle_s=30.0)
    channels = [cluster_conn.keys.durable(f"s{i}", "ev") for i in range(60)]
    assert len({key_slot(c.encode()) for c in channels}) > 10
    listeners = [Listener(c, limit=1000) for c in channels]
    try:
        # Joined together, so the link's outbox holds many subscriptions at once (the first
        # joins do not wait for the connection: they are confirmed later).
        await asyncio.gather(
            *(hub.join(c, lst) for c, lst in zip(channels, listeners, strict=True))
        )
        missing = set(range(len(channels)))
        async with asyncio.timeout(10):
            while missing:
                for i in missing:
                    await client.execute_command("SPUBLISH", channels[i], b"[0,0,[]]")
                await asyncio.sleep(0.2)
                missing = {i for i in missing if listeners[i].pop() is None}
    finally:
        for c, lst in zip(channels, listeners, strict=True):
            hub.leave(c, lst)
        await hub.close()
