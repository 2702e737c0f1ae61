"""Violations lead to a temporary ban, counted in the same backend on every instance."""

from __future__ import annotations

import asyncio

from chatscale.ratelimit import BanPolicy, MemoryBans, RedisBans
from chatscale.ratelimit.bans import BanStore
from chatscale.redis import RedisConnection, connect


def store_for(conn: RedisConnection | None) -> BanStore:
    return MemoryBans() if conn is None else RedisBans(conn)


async def test_the_nth_violation_bans(backend: RedisConnection | None) -> None:
    policy = BanPolicy(store_for(backend), violation_limit=3, ban_duration_s=120)
    assert (await policy.violation("user:v")).banned_for == 0
    assert (await policy.violation("user:v")).banned_for == 0
    assert await policy.ban_left("user:v") == 0
    third = await policy.violation("user:v")
    assert third.count == 3 and third.banned_for == 120
    assert 119 <= await policy.ban_left("user:v") <= 120
    assert await policy.ban_left("user:other") == 0
    await policy.store.lift("user:v")
    assert await policy.ban_left("user:v") == 0
    assert (await policy.violation("user:v")).count == 1  # counting starts again


async def test_bans_expire(backend: RedisConnection | None) -> None:
    policy = BanPolicy(store_for(backend), violation_limit=1, ban_duration_s=1)
    assert (await policy.violation("user:e")).banned_for == 1
    assert await policy.ban_left("user:e") == 1
    await asyncio.sleep(1.1)
    assert await policy.ban_left("user:e") == 0


async def test_violations_outside_the_window_are_forgotten(
    backend: RedisConnection | None,
) -> None:
    policy = BanPolicy(store_for(backend), violation_limit=2, ban_duration_s=60, window_s=1)
    await policy.violation("user:w")
    await asyncio.sleep(1.1)
    assert (await policy.violation("user:w")).count == 1


async def test_disabled_bans_store_nothing(redis_conn: RedisConnection) -> None:
    policy = BanPolicy(RedisBans(redis_conn), violation_limit=0, ban_duration_s=60)
    for _ in range(5):
        assert (await policy.violation("user:d")).banned_for == 0
    assert await redis_conn.client.exists(redis_conn.keys.violations("user:d")) == 0


async def test_violations_from_all_instances_add_up(redis_conn: RedisConnection) -> None:
    other = await connect(redis_conn.config)
    try:
        policies = [
            BanPolicy(RedisBans(c), violation_limit=10, ban_duration_s=60)
            for c in (redis_conn, other)
        ]
        results = await asyncio.gather(*(p.violation("user:s") for p in policies * 5))
        assert sorted(r.count for r in results) == list(range(1, 11))
        assert sum(1 for r in results if r.banned_for) == 1
        assert await policies[1].ban_left("user:s") > 0
    finally:
        await other.close()
