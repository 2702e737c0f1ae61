"""Near caches: invalidated on every instance by one pub/sub channel per process."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatscale.cache import CacheFactory, CacheKeys, NearCache
from chatscale.redis import RedisConnection
from tests.cache.conftest import cache_settings
from tests.conftest import unique_prefix

CHILD = Path(__file__).with_name("near_child.py")
ROOT = Path(__file__).resolve().parents[2]
NS = CacheKeys.ROLES
#: How long an invalidation may take to reach another instance in these tests.
BOUND_S = 1.0


def near_factory(connection: RedisConnection, ttl_ms: int = 3_600_000) -> CacheFactory:
    settings = cache_settings(near_cache_namespaces="ROLES", near_cache_ttl=ttl_ms)
    return CacheFactory(settings, connection)


@pytest.fixture
async def two_instances(
    redis_conn: RedisConnection, make_conn: Any
) -> AsyncIterator[tuple[NearCache, NearCache]]:
    """Two instances (own connection, own subscription) sharing one prefix."""
    config = redis_conn.config
    from chatscale.redis import connect

    other = await connect(config)
    first, second = near_factory(redis_conn), near_factory(other)
    a, b = first.cache(NS), second.cache(NS)
    assert isinstance(a, NearCache) and isinstance(b, NearCache)
    assert await a.invalidator.wait_ready() and await b.invalidator.wait_ready()
    yield a, b
    await first.close()
    await second.close()
    await other.close()


async def _until(check: Any, within: float = BOUND_S) -> float:
    start = time.perf_counter()
    async with asyncio.timeout(within):
        while True:
            if await check():
                return time.perf_counter() - start
            await asyncio.sleep(0.001)


async def test_reads_are_served_locally(two_instances: tuple[NearCache, NearCache]) -> None:
    a, _ = two_instances
    await a.set("k", {"v": 1})
    for _ in range(10):
        assert await a.get("k") == {"v": 1}
    assert a.misses == 1 and a.hits == 9
    assert await a.get("absent", "d") == "d"  # absence is cached too
    assert await a.get("absent", "d") == "d"
    assert a.misses == 2


async def test_every_write_kind_invalidates_the_other_instance(
    two_instances: tuple[NearCache, NearCache],
) -> None:
    a, b = two_instances
    writes = [
        lambda: b.set("k", 2),
        lambda: b.set_many({"k": 3, "j": 0}),
        lambda: b.compare_and_set("k", 3, 4),
        lambda: b.incr("k"),
        lambda: b.delete("k"),
        lambda: b.add("k", 6),
        lambda: b.clear(),
    ]
    expected: list[Any] = [2, 3, 4, 5, None, 6, None]
    await b.set("k", 1)
    for write, value in zip(writes, expected, strict=True):
        await a.get("k")
        await a.get("k")  # now cached on a
        await write()

        async def sees(value: Any = value) -> bool:
            return bool(await a.get("k") == value)

        await _until(sees)


async def test_get_many_through_the_near_cache(
    two_instances: tuple[NearCache, NearCache],
) -> None:
    a, b = two_instances
    received = a.invalidator.received
    await b.set_many({"x": 1, "y": 2})

    async def delivered() -> bool:
        return a.invalidator.received > received

    await _until(delivered)
    assert await a.get_many(["x", "y", "z"]) == {"x": 1, "y": 2}
    hits = a.hits
    assert await a.get_many(["x", "y", "z"]) == {"x": 1, "y": 2}
    assert a.hits == hits + 3
    await b.set("y", 20)

    async def sees() -> bool:
        return await a.get_many(["x", "y"]) == {"x": 1, "y": 20}

    await _until(sees)


async def test_pubsub_reconnect_drops_the_near_cache(
    standalone_conn: RedisConnection,
) -> None:
    factory = near_factory(standalone_conn)
    try:
        cache = factory.cache(NS)
        assert isinstance(cache, NearCache)
        invalidator = cache.invalidator
        assert await invalidator.wait_ready()
        await cache.set("k", 1)
        await cache.get("k")
        assert len(cache) == 1
        generation = invalidator.generation
        # Write behind the near cache's back, then cut its subscription: the entry must
        # not survive the reconnect (the invalidation might have been lost).
        await standalone_conn.client.set(standalone_conn.keys.cache("ROLES", "k"), b"2")
        await standalone_conn.client.client_kill_filter(_type="pubsub")

        async def resubscribed() -> bool:
            return invalidator.ready and invalidator.generation > generation + 1

        await _until(resubscribed, within=5)
        assert invalidator.reconnects >= 1
        assert await cache.get("k") == 2
    finally:
        await factory.close()


async def test_reads_bypass_the_near_cache_until_subscribed(
    standalone_conn: RedisConnection,
) -> None:
    factory = near_factory(standalone_conn)
    try:
        cache = factory.cache(NS)
        assert isinstance(cache, NearCache)
        await cache.invalidator.close()  # never subscribed again
        await cache.set("k", 1)
        assert await cache.get("k") == 1
        await standalone_conn.client.set(standalone_conn.keys.cache("ROLES", "k"), b"2")
        assert await cache.get("k") == 2
        assert cache.hits == 0 and len(cache) == 0
    finally:
        await factory.close()


async def test_near_ttl_bounds_staleness_without_invalidation(
    standalone_conn: RedisConnection,
) -> None:
    factory = near_factory(standalone_conn, ttl_ms=50)
    try:
        cache = factory.cache(NS)
        assert isinstance(cache, NearCache)
        assert await cache.invalidator.wait_ready()
        await cache.set("k", 1)
        assert await cache.get("k") == 1
        # A write that publishes nothing (another tool, or a lost message).
        await standalone_conn.client.set(standalone_conn.keys.cache("ROLES", "k"), b"2")
        assert await cache.get("k") == 1
        await asyncio.sleep(0.08)
        assert await cache.get("k") == 2
    finally:
        await factory.close()


async def test_one_subscription_per_process(standalone_conn: RedisConnection) -> None:
    settings = cache_settings(near_cache_namespaces="ROLES,TOOLS,BANS")
    factory = CacheFactory(settings, standalone_conn)
    try:
        caches = [factory.cache(ns) for ns in ("ROLES", "TOOLS", "BANS")]
        invalidators = {id(c.invalidator) for c in caches if isinstance(c, NearCache)}
        assert len(invalidators) == 1
        for cache in caches:
            await cache.get("x")
        assert factory.invalidator is not None
        assert await factory.invalidator.wait_ready()
        channel = standalone_conn.keys.cache_invalidation_channel
        numsub = await standalone_conn.client.pubsub_numsub(channel)
        assert numsub[0][1] == 1
    finally:
        await factory.close()


async def test_a_concurrent_invalidation_keeps_a_racing_read_out(
    standalone_conn: RedisConnection,
) -> None:
    factory = near_factory(standalone_conn)
    try:
        cache = factory.cache(NS)
        assert isinstance(cache, NearCache)
        assert await cache.invalidator.wait_ready()
        await cache.set("k", 1)
        read = asyncio.create_task(cache.get("k"))
        await asyncio.sleep(0)  # the read has sent GET and waits for the reply
        cache.invalidate(["k"])  # an invalidation lands meanwhile
        assert await read == 1
        assert len(cache) == 0  # what it fetched may be stale: not kept
    finally:
        await factory.close()


async def test_another_process_sees_writes_within_the_bound(
    redis_standalone: Any, standalone_conn: RedisConnection
) -> None:
    """A child process reads through its own near cache; this process writes."""
    prefix = standalone_conn.keys.prefix
    factory = near_factory(standalone_conn)
    cache = factory.cache(NS)
    await cache.set("hot", 0)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        redis_standalone.url(),
        prefix,
        "hot",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdin is not None and child.stdout is not None
    stdout = child.stdout

    async def line() -> str:
        return (await stdout.readline()).decode().strip()

    try:
        async with asyncio.timeout(20):
            assert await line() == "READY"
            assert await line() == "VALUE 0"
        delays = []
        for value in range(1, 6):
            await asyncio.sleep(0.05)  # the child is serving "hot" from its near cache
            started = time.perf_counter()
            await cache.set("hot", value)
            async with asyncio.timeout(BOUND_S):
                assert await line() == f"VALUE {value}"
            delays.append(time.perf_counter() - started)
        child.stdin.close()
        async with asyncio.timeout(10):
            stats = (await line()).split()
            await child.wait()
        assert stats[0] == "STATS"
        hits, misses = int(stats[1]), int(stats[2])
        assert hits > 10 * misses, (hits, misses)  # it really read from its near cache
        assert max(delays) < BOUND_S
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await factory.close()
    assert child.returncode == 0


async def test_unreadable_invalidation_drops_everything(standalone_conn: RedisConnection) -> None:
    factory = near_factory(standalone_conn)
    try:
        cache = factory.cache(NS)
        assert isinstance(cache, NearCache)
        assert await cache.invalidator.wait_ready()
        await cache.set("k", 1)
        await cache.get("k")
        assert len(cache) == 1
        channel = standalone_conn.keys.cache_invalidation_channel
        await standalone_conn.client.publish(channel, b"\xff garbage")

        async def dropped() -> bool:
            return len(cache) == 0

        await _until(dropped)
        other_prefix = unique_prefix()
        assert other_prefix not in channel
    finally:
        await factory.close()


async def test_keepalive_ping_answers_and_a_stalled_link_is_torn_down(
    standalone_factory: Any, make_conn: Any
) -> None:
    server = standalone_factory()
    connection = await make_conn(server.url(), unique_prefix(), redis_ping_interval=2)
    factory = near_factory(connection)
    try:
        cache = factory.cache(NS)
        assert isinstance(cache, NearCache)
        invalidator = cache.invalidator
        assert await invalidator.wait_ready()
        await connection.keepalive.ping_once()
        assert connection.keepalive.failures == 0  # the subscription answered its ping
        await cache.set("k", 1)
        await cache.get("k")
        generation = invalidator.generation
        # Freeze every client: the subscription's ping goes unanswered past the deadline.
        await asyncio.to_thread(server.cli, "CLIENT", "PAUSE", "3000", "ALL")
        await connection.keepalive.ping_once()
        assert connection.keepalive.failures >= 1
        assert len(cache) == 0 and invalidator.generation > generation

        async def back() -> bool:
            return invalidator.ready

        await _until(back, within=10)
        assert await cache.get("k") == 1
    finally:
        await factory.close()


@pytest.mark.slow
async def test_redis_restart_empties_then_restores_the_near_cache(
    standalone_factory: Any, make_conn: Any
) -> None:
    server = standalone_factory()
    connection = await make_conn(server.url(), unique_prefix())
    factory = near_factory(connection)
    try:
        cache = factory.cache(NS)
        assert isinstance(cache, NearCache)
        invalidator = cache.invalidator
        assert await invalidator.wait_ready()
        await cache.set("k", 1)
        await cache.get("k")
        assert len(cache) == 1
        await asyncio.to_thread(server.kill)

        async def down() -> bool:
            return not invalidator.ready

        await _until(down, within=5)
        assert len(cache) == 0
        await asyncio.to_thread(server.restart)

        async def up() -> bool:
            return invalidator.ready

        await _until(up, within=15)
        await cache.set("k", 2)  # the restarted server has no data (no persistence)
        assert await cache.get("k") == 2
    finally:
        await factory.close()
