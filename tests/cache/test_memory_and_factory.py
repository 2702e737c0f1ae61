"""The memory backend's bound and sweep, backend selection and the module helpers."""

from __future__ import annotations

import asyncio

import pytest

import chatscale.cache as cache_module
from chatscale.cache import (
    CacheFactory,
    CacheKeys,
    CacheNamespaceError,
    CacheNotConfiguredError,
    MemoryCache,
    NearCache,
    RedisCache,
)
from chatscale.cache.codec import decode, encode
from chatscale.cache.errors import CacheCorruptError
from chatscale.config import load_settings
from chatscale.redis import RedisConnection
from tests.cache.conftest import cache_settings


async def test_lru_bound_evicts_least_recently_used() -> None:
    cache = MemoryCache(CacheKeys.ROLES, max_entries=3)
    await cache.set_many({"a": 1, "b": 2, "c": 3})
    assert await cache.get("a") == 1  # a is now the most recent
    await cache.set("d", 4)
    assert len(cache) == 3
    assert cache.evictions == 1
    assert await cache.get_many(["a", "b", "c", "d"]) == {"a": 1, "c": 3, "d": 4}
    await cache.close()


async def test_sweeper_removes_expired_entries_without_reads() -> None:
    cache = MemoryCache(CacheKeys.ROLES, sweep_interval_s=0.02)
    await cache.set_many({f"k{i}": i for i in range(2_500)}, ttl=0.01)
    await cache.set("keep", 1, ttl=None)
    await cache.set("later", 1, ttl=60)
    await asyncio.sleep(0.15)
    assert len(cache) == 2
    await cache.close()
    await cache.close()  # idempotent


async def test_overwrites_do_not_grow_the_expiry_heap_without_bound() -> None:
    cache = MemoryCache(CacheKeys.ROLES)
    for i in range(5_000):
        await cache.set("same", i, ttl=60)
    assert len(cache._expiries) <= 2 * len(cache) + 1_025
    await cache.close()


def test_memory_cache_works_without_an_event_loop_task() -> None:
    async def scenario() -> object:
        cache = MemoryCache(CacheKeys.ROLES)
        await cache.set("k", "v", ttl=5)
        value = await cache.get("k")
        await cache.close()
        return value

    assert asyncio.run(scenario()) == "v"


def test_foreign_stored_data_is_reported_not_crashing() -> None:
    with pytest.raises(CacheCorruptError, match="'k'"):
        decode(b"\xffnot json", "k")
    assert decode(encode(b"raw")) == b"raw"


async def test_backend_selection(standalone_conn: RedisConnection) -> None:
    settings = cache_settings(
        forced_in_memory_cache_namespaces="CONFIG_STORE",
        near_cache_namespaces="ROLES,CONFIG_STORE",
    )
    memory_only = CacheFactory(settings)
    with_redis = CacheFactory(settings, standalone_conn)
    try:
        assert all(memory_only.backend_of(ns) == "memory" for ns in CacheKeys)
        assert with_redis.backend_of("CONFIG_STORE") == "memory"  # forced wins over near
        assert isinstance(with_redis.cache(CacheKeys.CONFIG_STORE), MemoryCache)
        assert isinstance(with_redis.cache("ROLES"), NearCache)
        assert isinstance(with_redis.cache(CacheKeys.TOOLS), RedisCache)
        assert with_redis.cache("TOOLS") is with_redis.cache(CacheKeys.TOOLS)
        for bad in ["roles", "NOPE", "", 3, None]:
            with pytest.raises(CacheNamespaceError, match="valid names are"):
                with_redis.cache(bad)  # type: ignore[arg-type]
    finally:
        await memory_only.close()
        await with_redis.close()


async def test_default_forced_namespaces_stay_in_memory(standalone_conn: RedisConnection) -> None:
    factory = CacheFactory(load_settings(), standalone_conn)
    try:
        defaults = cache_module.DEFAULT_FORCED_IN_MEMORY
        assert factory.settings.forced_in_memory_cache_namespaces == defaults
        assert factory.backend_of(CacheKeys.APP_CONFIG) == "memory"
        assert factory.backend_of(CacheKeys.ROLES) == "redis"
    finally:
        await factory.close()


async def test_module_helpers() -> None:
    await cache_module.shutdown()
    with pytest.raises(CacheNotConfiguredError):
        cache_module.cache(CacheKeys.ROLES)
    first = await cache_module.configure(cache_settings())
    await cache_module.cache(CacheKeys.ROLES).set("k", 1)
    second = await cache_module.configure(cache_settings())
    assert second is not first
    assert await cache_module.cache("ROLES").get("k") is None  # a fresh process state
    await cache_module.shutdown()
    await cache_module.shutdown()
    with pytest.raises(CacheNotConfiguredError):
        cache_module.cache(CacheKeys.ROLES)


async def test_namespace_default_ttl_is_applied(standalone_conn: RedisConnection) -> None:
    factory = CacheFactory(cache_settings(), standalone_conn)
    try:
        titles = factory.cache(CacheKeys.GEN_TITLE)  # 2 minutes by default
        await titles.set("t", "title")
        key = standalone_conn.keys.cache("GEN_TITLE", "t")
        assert 110_000 < await standalone_conn.client.pttl(key) <= 120_000
        roles = factory.cache(CacheKeys.ROLES)  # no expiry by default
        await roles.set("r", 1)
        assert await standalone_conn.client.pttl(standalone_conn.keys.cache("ROLES", "r")) == -1
        await titles.set("t", "title", ttl=5)
        assert 4_000 < await standalone_conn.client.pttl(key) <= 5_000
    finally:
        await factory.close()
