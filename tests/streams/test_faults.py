"""Redis faults mid-stream: nothing a producer stored is lost, nothing is delivered twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import create_stream_manager
from chatscale.streams.redis import RedisStreamManager
from tests.conftest import unique_prefix
from tests.streams.helpers import check_ids, collect, text_of

pytestmark = pytest.mark.slow


async def _produce_through_fault(
    uri: str, fault: Any, *, reconciles: bool = False, **overrides: Any
) -> None:
    settings = load_settings(
        use_redis=True,
        redis_uri=uri,
        redis_key_prefix=unique_prefix(),
        redis_retry_max_delay=200,
        **overrides,
    )
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection)
    assert isinstance(manager, RedisStreamManager)
    try:
        await manager.start()
        producer = await manager.create(owner="u")
        live = asyncio.create_task(collect(manager, producer.job_id, within=60))
        words = [f"w{i} " for i in range(300)]
        for i, word in enumerate(words):
            await producer.delta(word)
            await asyncio.sleep(0.005)
            if i == 150:
                await fault(manager, producer.job_id)
        await producer.complete()
        expected = "".join(words)
        events = await collect(manager, producer.job_id, within=30)
        check_ids(events)
        assert text_of(events) == expected
        assert events[-1].data["text"] == expected
        assert await live == events
        if reconciles:
            assert manager.metrics.reconciled_events > 0
    finally:
        await manager.close()
        await connection.close()


async def test_restart_without_persistence_is_reconciled(standalone_factory: Any) -> None:
    server = standalone_factory()

    async def restart(manager: RedisStreamManager, job_id: str) -> None:
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)

    await _produce_through_fault(server.url(), restart, reconciles=True)


@pytest.mark.cluster
async def test_cluster_master_killed_mid_stream(cluster_factory: Any) -> None:
    cluster = cluster_factory(masters=3, replicas_per_master=1)

    async def kill_owner(manager: RedisStreamManager, job_id: str) -> None:
        node = manager.client.get_node_from_key(manager.keys.stream_job(job_id))
        masters = cluster.masters()
        index = next(i for i, m in enumerate(masters) if m.port == node.port)
        await asyncio.to_thread(cluster.kill_master, index)

    await _produce_through_fault(",".join(cluster.urls()), kill_owner)


@pytest.mark.sentinel
async def test_sentinel_master_killed_mid_stream(sentinel_factory: Any) -> None:
    handle = sentinel_factory(down_after_ms=1000)

    async def kill_master(manager: RedisStreamManager, job_id: str) -> None:
        await asyncio.to_thread(handle.master.kill)

    await _produce_through_fault(handle.sentinel_url(), kill_master)
