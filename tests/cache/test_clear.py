"""Clearing namespaces on Redis touches exactly their keys, on every topology."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatscale.cache import CacheFactory, CacheKeys, ClearOptions, clear_namespaces
from chatscale.redis import RedisConnection, connect
from tests.cache.conftest import cache_settings
from tests.conftest import unique_prefix

SMALL = ClearOptions(scan_count=5, chunk_size=7)


async def _seed(conn: RedisConnection, extra: RedisConnection) -> dict[str, set[bytes]]:
    """Keys of the target namespace, other namespaces, non-cache keys and another prefix."""
    space, client = conn.keys, conn.client
    groups: dict[str, set[bytes]] = {
        "roles": {space.cache("ROLES", f"k{i}").encode() for i in range(120)},
        "roles_odd": {space.cache("ROLES", k).encode() for k in ["*", "[a]", "{t}", ""]},
        "tools": {space.cache("TOOLS", f"k{i}").encode() for i in range(30)},
        "rolesx": {space.key("ROLESX:k1").encode()},  # shares the text prefix "ROLES"
        "session": {space.session("abc").encode(), space.key("limits", "x").encode()},
        "other_prefix": {extra.keys.cache("ROLES", f"k{i}").encode() for i in range(20)},
    }
    for name, keys in groups.items():
        target = extra.client if name == "other_prefix" else client
        async with target.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, b"1")
            await pipe.execute()
    return groups


async def _exists(conn: RedisConnection, keys: set[bytes]) -> int:
    total = 0
    for key in keys:
        total += int(await conn.client.exists(key))
    return total


@pytest.fixture
async def extra(redis_conn: RedisConnection) -> AsyncIterator[RedisConnection]:
    """Another deployment on the same Redis whose prefix extends ours textually."""
    config = dataclasses.replace(redis_conn.config, prefix=redis_conn.keys.prefix + "x")
    connection = await connect(config)
    yield connection
    await connection.close()


async def test_clear_one_namespace_exactly(
    redis_conn: RedisConnection, extra: RedisConnection
) -> None:
    groups = await _seed(redis_conn, extra)
    removed = await clear_namespaces(redis_conn, [CacheKeys.ROLES], SMALL)
    assert removed == len(groups["roles"]) + len(groups["roles_odd"])
    assert await _exists(redis_conn, groups["roles"] | groups["roles_odd"]) == 0
    for name in ("tools", "rolesx", "session"):
        assert await _exists(redis_conn, groups[name]) == len(groups[name]), name
    assert await _exists(extra, groups["other_prefix"]) == len(groups["other_prefix"])


async def test_clear_several_namespaces_in_one_scan(
    redis_conn: RedisConnection, extra: RedisConnection
) -> None:
    groups = await _seed(redis_conn, extra)
    removed = await clear_namespaces(redis_conn, list(CacheKeys), SMALL)
    cache_keys = groups["roles"] | groups["roles_odd"] | groups["tools"]
    assert removed == len(cache_keys)
    assert await _exists(redis_conn, cache_keys) == 0
    for name in ("rolesx", "session"):
        assert await _exists(redis_conn, groups[name]) == len(groups[name]), name
    assert await _exists(extra, groups["other_prefix"]) == len(groups["other_prefix"])


async def test_factory_clear_all_covers_memory_and_redis(redis_conn: RedisConnection) -> None:
    settings = cache_settings(forced_in_memory_cache_namespaces="APP_CONFIG")
    factory = CacheFactory(settings, redis_conn)
    try:
        await factory.cache(CacheKeys.APP_CONFIG).set("a", 1)
        await factory.cache(CacheKeys.ROLES).set_many({"a": 1, "b": 2})
        await factory.cache(CacheKeys.BANS).set("a", 1)
        await redis_conn.client.set(redis_conn.keys.session("s"), b"keep")
        assert await factory.clear_all() == 4
        assert await redis_conn.client.get(redis_conn.keys.session("s")) == b"keep"
        assert await factory.cache(CacheKeys.ROLES).get("a") is None
    finally:
        await factory.close()


async def test_cluster_safe_delete_on_a_single_endpoint(standalone_conn: RedisConnection) -> None:
    """REDIS_CLUSTER_SAFE_DELETE: every UNLINK names keys of one hash slot only."""
    from redis.crc import key_slot

    client = standalone_conn.client
    keys = [standalone_conn.keys.cache("ROLES", f"k{i}").encode() for i in range(300)]
    await client.mset(dict.fromkeys(keys, b"1"))
    await client.config_resetstat()
    options = ClearOptions(scan_count=100, chunk_size=1_000, cluster_safe=True)
    assert await clear_namespaces(standalone_conn, [CacheKeys.ROLES], options) == 300
    stats = await client.info("commandstats")
    # One UNLINK per distinct slot (the server is shared, so at least that many).
    assert stats["cmdstat_unlink"]["calls"] >= len({key_slot(k) for k in keys})
    assert await client.exists(*keys) == 0


async def test_no_prefix_deployment_leaves_prefixed_ones(
    redis_standalone: Any, make_conn: Any
) -> None:
    bare = await make_conn(redis_standalone.url(), "")
    prefixed = await make_conn(redis_standalone.url(), unique_prefix())
    mine = f"ROLES:{unique_prefix()}"
    await bare.client.set(mine, b"1")
    await prefixed.client.set(prefixed.keys.cache("ROLES", "k"), b"1")
    assert await clear_namespaces(bare, [CacheKeys.ROLES], ClearOptions()) >= 1
    assert await bare.client.exists(mine) == 0
    assert await prefixed.client.exists(prefixed.keys.cache("ROLES", "k")) == 1


@pytest.mark.parametrize("count", [0, 1])
async def test_clear_of_empty_namespace(redis_conn: RedisConnection, count: int) -> None:
    keys = [redis_conn.keys.cache("FLOWS", "k")] * count
    for key in keys:
        await redis_conn.client.set(key, b"1")
    assert await clear_namespaces(redis_conn, [CacheKeys.FLOWS], SMALL) == count
    assert await clear_namespaces(redis_conn, [], SMALL) == 0


async def test_chunks_and_scan_count_follow_the_settings(
    standalone_factory: Any, make_conn: Any
) -> None:
    server = standalone_factory()  # a private server: exact command counts
    conn = await make_conn(server.url(), unique_prefix())
    keys = [conn.keys.cache("ROLES", f"k{i}") for i in range(100)]
    await conn.client.mset(dict.fromkeys(keys, b"1"))
    await conn.client.mset({conn.keys.cache("TOOLS", f"k{i}"): b"1" for i in range(100)})
    await conn.client.config_resetstat()
    options = ClearOptions(scan_count=10, chunk_size=30)
    assert await clear_namespaces(conn, [CacheKeys.ROLES], options) == 100
    stats = await conn.client.info("commandstats")
    assert stats["cmdstat_unlink"]["calls"] == 4  # 30 + 30 + 30 + 10
    # COUNT is a hint (Redis visits hash buckets, not keys): about 200 / 10 calls.
    assert stats["cmdstat_scan"]["calls"] >= 200 // 10 // 2
    assert "cmdstat_flushdb" not in stats and "cmdstat_keys" not in stats
    assert await conn.client.dbsize() == 100
