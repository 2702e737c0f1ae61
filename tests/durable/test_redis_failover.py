"""Durable Streams appends on Sentinel across a failover: the store's shared connection
(chatscale.redis.group) follows the new master, no append waits past the socket timeout,
and none is stored twice.

Appends the old master acknowledged between the replica's promotion and its own demotion
are lost with it (replication is asynchronous, and Sentinel's failover is not a handover:
docs/durable-streams.md, "Limits"), so the test does not ask for every acknowledged one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chatscale.durable.model import AppendRequest, CreateRequest, Record
from chatscale.durable.redis_store import RedisDurableStore
from chatscale.redis import connect
from tests.conftest import redis_config, unique_prefix


@pytest.mark.slow
@pytest.mark.sentinel
@pytest.mark.timeout(120)
async def test_appends_follow_a_sentinel_failover(sentinel_factory: Any) -> None:
    deployment = sentinel_factory()
    conn = await connect(
        redis_config(
            deployment.sentinel_url(),
            prefix=unique_prefix(),
            redis_retry_max_attempts=0,
            redis_retry_max_delay=500,
        )
    )
    store = RedisDurableStore(conn)
    name = "failover"
    acked: list[bytes] = []
    attempted: list[bytes] = []
    slowest = 0.0
    stop = asyncio.Event()

    async def appender(writer: int) -> None:
        nonlocal slowest
        n = 0
        while not stop.is_set():
            data = f"{writer}:{n};".encode()
            attempted.append(data)
            began = time.monotonic()
            try:
                await store.append(
                    name, AppendRequest("text/plain", Record(data, 1), None, None, False)
                )
            except Exception:
                await asyncio.sleep(0.05)  # refused or cut: go on with the next one
            else:
                acked.append(data)
            n += 1  # never the same bytes twice: a duplicate would be the store's
            slowest = max(slowest, time.monotonic() - began)

    try:
        create = CreateRequest("text/plain", None, None, None, False, b"", None)
        assert (await store.create(name, create)).status == 201
        writers = [asyncio.create_task(appender(i)) for i in range(8)]
        await asyncio.sleep(0.5)
        before = len(acked)
        assert before > 0
        await asyncio.to_thread(deployment.failover)
        failed_over = time.monotonic()
        # Appends land on the new master: the stream there grows.
        key = store._keys(name)[1]
        resumed = None
        while time.monotonic() - failed_over < 30:
            try:
                async with asyncio.timeout(3):
                    first = await conn.client.llen(key)
                    await asyncio.sleep(0.3)
                    if await conn.client.llen(key) > first:
                        resumed = time.monotonic() - failed_over
                        break
            except Exception:
                await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*writers)
        assert resumed is not None, "appends did not resume within 30 s of the failover"
        assert resumed < 15, resumed
        stored = await conn.client.lrange(key, 0, -1)
        # None stored twice, none that was not sent; those after the failover all there.
        assert len(stored) == len(set(stored))
        assert set(stored) <= set(acked) | set(attempted)
        latest = {data.split(b":")[0]: data for data in acked}
        for data in latest.values():
            assert data in stored, data
        # Bounded by the socket timeout (and a reconnect), never left waiting.
        assert slowest < conn.config.socket_timeout_s * 2 + 1, slowest
    finally:
        await store.close()
        await conn.close()
