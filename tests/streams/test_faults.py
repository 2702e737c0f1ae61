"""Redis faults mid-stream: nothing a producer stored is lost, nothing is delivered twice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import create_stream_manager
from chatscale.streams.redis import RedisStreamManager
from chatscale.tasks import stop_task
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


@pytest.mark.cluster
async def test_a_dead_cluster_master_does_not_silence_other_shards_heartbeats(
    cluster_factory: Any,
) -> None:
    """Checker cluster seeds 3014, 3044: after a master kill, an instance writing its jobs
    to that master went silent for longer than the lease (redis-py rediscovers the cluster
    before that client's next command, and the heartbeat waited behind it), although the
    heartbeats live on another shard; the other instances took its jobs while it ran. Its
    heartbeat now has a client of its own (redis-py also closes every connection of a
    Cluster client on CLUSTERDOWN, in-flight beats included), the jobs index's TTL is
    refreshed by the reaper, and beats keep their period: it stays as fresh as an idle
    instance's. (With the own client alone, a beat that waited on the dead master for the
    index's TTL pushed the next one back: a 1.58 s silence against 0.67 s, in CI.)

    Both instances fall silent while the cluster answers CLUSTERDOWN (it requires full
    coverage); what must not differ is how long. Silence is measured between the beats each
    instance made, by Redis's clock, as each instance records them: a watcher reading the
    heartbeats from Redis is blind while its own client fails, and when it could read again
    an instance that had just beaten looked as if it had never been silent (1.27 s against
    0.50 s in CI, and either way round here, while both had been silent 1.08 s)."""
    cluster = cluster_factory(masters=3, replicas_per_master=1)
    settings = load_settings(
        use_redis=True,
        redis_uri=",".join(cluster.urls()),
        redis_key_prefix=unique_prefix(),
        # The fault checker's settings.
        redis_connect_timeout=1000,
        redis_socket_timeout=2000,
        stream_lease_ttl=1500,
    )
    assert settings.redis is not None
    connections = [await connect(settings.redis) for _ in range(2)]
    client: Any = connections[0].client
    keys = connections[0].keys
    beats_on = client.get_node_from_key(keys.stream_instances).port
    victim = next(m for m in cluster.masters() if m.port != beats_on)

    def on_victim(key: str) -> bool:
        return bool(client.get_node_from_key(key).port == victim.port)

    # The busy instance: its jobs index and its job on the master that dies.
    busy_id = next(
        f"busy{i}" for i in range(10_000) if on_victim(keys.stream_instance_jobs(f"busy{i}"))
    )
    busy = create_stream_manager(settings, connections[0], instance_id=busy_id)
    idle = create_stream_manager(settings, connections[1], instance_id="idle")
    assert isinstance(busy, RedisStreamManager) and isinstance(idle, RedisStreamManager)
    job_id = next(f"job{i}" for i in range(10_000) if on_victim(keys.stream_job(f"job{i}")))
    gaps: dict[str, float] = {busy_id: 0.0, "idle": 0.0}
    try:
        await busy.start()
        await idle.start()
        producer = await busy.create(owner="u", job_id=job_id)

        async def produce() -> None:
            with contextlib.suppress(Exception):
                for i in range(400):
                    await producer.delta(f"w{i} ")
                    await asyncio.sleep(0.02)

        managers = {busy_id: busy, "idle": idle}
        beats: dict[str, list[int]] = {name: [] for name in managers}

        async def watch() -> None:
            # Every beat each instance made (``last_beat``: the last one's Redis time, None
            # after a failure), sampled far more often than beats come.
            while True:
                for name, manager in managers.items():
                    beat = manager.liveness.last_beat
                    if beat is not None and (not beats[name] or beats[name][-1] != beat):
                        beats[name].append(beat)
                await asyncio.sleep(0.01)

        producing = asyncio.create_task(produce())
        watching = asyncio.create_task(watch())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(victim.kill)
        await asyncio.sleep(7.0)  # the failover (node timeout 1.5 s) and its aftermath
        # One cancel can come back from inside redis-py as a TimeoutError (the producer's
        # writes), which a loop survives.
        await stop_task(watching)
        await stop_task(producing)
        assert idle.metrics.takeovers == 0, "a living instance's job was taken over"
        for name, made in beats.items():
            gaps[name] = max(b - a for a, b in itertools.pairwise(made)) / 1000
        assert gaps[busy_id] <= gaps["idle"] + 0.75, gaps
    finally:
        await busy.close()
        await idle.close()
        for connection in connections:
            await connection.close()
