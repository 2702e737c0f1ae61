"""At most N running generations per user: atomic, released however a holder ends, and
reclaimed by TTL when a holder dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from chatscale.ratelimit import (
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    Lease,
    MemoryConcurrency,
    RedisConcurrency,
)
from chatscale.ratelimit.concurrency import ConcurrencyBackend
from chatscale.redis import RedisConnection, connect
from tests.conftest import unique_prefix


def backend_for(conn: RedisConnection | None) -> ConcurrencyBackend:
    return MemoryConcurrency() if conn is None else RedisConcurrency(conn)


async def test_limit_holds_and_release_frees(backend: RedisConnection | None) -> None:
    limiter = ConcurrencyLimiter(backend_for(backend), 2)
    first = await limiter.acquire("u1")
    second = await limiter.acquire("u1")
    with pytest.raises(ConcurrencyLimitExceeded) as info:
        await limiter.acquire("u1")
    assert info.value.limit == 2 and info.value.running == 2 and info.value.retry_after > 0
    other_user = await limiter.acquire("u2")
    assert await limiter.running("u1") == 2
    await limiter.release(first)
    third = await limiter.acquire("u1")
    for lease in (second, third, other_user):
        await limiter.release(lease)
    await limiter.release(third)  # twice is harmless
    assert await limiter.running("u1") == 0


async def test_released_on_error_and_on_cancel(backend: RedisConnection | None) -> None:
    limiter = ConcurrencyLimiter(backend_for(backend), 1)
    with pytest.raises(RuntimeError):
        async with limiter.hold("u"):
            raise RuntimeError("model failed")
    assert await limiter.running("u") == 0

    entered = asyncio.Event()

    async def generation() -> None:
        async with limiter.hold("u"):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(generation())
    await entered.wait()
    assert await limiter.running("u") == 1
    task.cancel()  # an abort
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await limiter.running("u") == 0
    async with limiter.hold("u") as lease:
        assert lease.running == 1


async def test_a_dead_holder_is_reclaimed_by_ttl(backend: RedisConnection | None) -> None:
    store = backend_for(backend)
    # A holder that never renews nor releases: a process killed mid-generation.
    assert (await store.acquire("u", "dead", 1, 300)).ok
    refused = await store.acquire("u", "alive", 1, 300)
    assert not refused.ok and 0 < refused.oldest_expires_ms <= 300
    await asyncio.sleep(0.35)
    assert (await store.acquire("u", "alive", 1, 300)).ok


async def test_a_running_holder_keeps_its_slot_past_the_ttl(
    backend: RedisConnection | None,
) -> None:
    limiter = ConcurrencyLimiter(backend_for(backend), 1, lease_ttl_s=0.3)
    async with limiter.hold("u") as lease:
        await asyncio.sleep(0.8)  # more than two TTLs: renewal every 0.1 s keeps it
        assert not lease.lost
        with pytest.raises(ConcurrencyLimitExceeded):
            await limiter.acquire("u")
    assert await limiter.running("u") == 0


async def test_renew_reports_a_lost_lease(backend: RedisConnection | None) -> None:
    store = backend_for(backend)
    assert (await store.acquire("u", "a", 1, 100)).ok
    await asyncio.sleep(0.15)
    assert (await store.acquire("u", "b", 1, 10_000)).ok
    assert await store.renew("u", "a", 1, 10_000) == 0  # b holds the only slot now
    await store.release("u", "b")
    assert await store.renew("u", "a", 1, 10_000) == 2  # room again: taken back
    assert await store.renew("u", "a", 1, 10_000) == 1


async def test_zero_means_unlimited(backend: RedisConnection | None) -> None:
    limiter = ConcurrencyLimiter(backend_for(backend), 0)
    leases = [await limiter.acquire("u") for _ in range(20)]
    assert await limiter.running("u") == 0
    for lease in leases:
        await limiter.release(lease)


async def test_racing_instances_admit_exactly_the_limit(redis_conn: RedisConnection) -> None:
    others = [await connect(redis_conn.config) for _ in range(2)]
    try:
        limiters = [ConcurrencyLimiter(RedisConcurrency(c), 3) for c in [redis_conn, *others]]

        async def try_once(limiter: ConcurrencyLimiter) -> tuple[ConcurrencyLimiter, Lease] | None:
            try:
                return limiter, await limiter.acquire("racer")
            except ConcurrencyLimitExceeded:
                return None

        results = await asyncio.gather(*(try_once(lim) for lim in limiters * 10))
        held = [r for r in results if r is not None]
        assert len(held) == 3
        assert await limiters[1].running("racer") == 3
        for limiter, lease in held:
            await limiter.release(lease)
        assert await limiters[2].running("racer") == 0
    finally:
        for conn in others:
            await conn.close()


async def test_the_key_expires_with_its_last_lease(redis_conn: RedisConnection) -> None:
    store = RedisConcurrency(redis_conn)
    key = redis_conn.keys.concurrency("u")
    assert (await store.acquire("u", "a", 2, 5_000)).ok
    assert 4_000 < await redis_conn.client.pttl(key) <= 5_000
    assert await store.release("u", "a") == 0
    assert await redis_conn.client.exists(key) == 0
    assert (await store.acquire("u", "b", 2, 200)).ok
    await asyncio.sleep(0.3)
    assert await redis_conn.client.exists(key) == 0  # nothing left behind by a dead holder


@pytest.mark.slow
async def test_renewals_failing_while_redis_is_down_log_summaries_not_tracebacks(
    standalone_factory: Any, make_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    redis = standalone_factory()
    conn = await make_conn(
        redis.url(),
        unique_prefix(),
        redis_retry_max_attempts=1,
        redis_connect_timeout=200,
        redis_socket_timeout=300,
    )
    # 20 leases renewed every 0.1 s: some 400 failed renewals in the 2.2 s outage.
    limiter = ConcurrencyLimiter(RedisConcurrency(conn), 20, lease_ttl_s=0.3)
    leases = [await limiter.acquire("u") for _ in range(20)]
    try:
        with caplog.at_level(logging.WARNING, "chatscale.ratelimit"):
            await asyncio.to_thread(redis.kill)
            await asyncio.sleep(2.2)
            await asyncio.to_thread(redis.restart)
            await asyncio.sleep(1.0)
    finally:
        for lease in leases:
            with contextlib.suppress(Exception):
                await limiter.release(lease)
    lines = [r.getMessage() for r in caplog.records if r.name == "chatscale.ratelimit"]
    assert not [r for r in caplog.records if r.exc_info], lines
    # ConnectionError, or TimeoutError when the kill lands while a renewal waits for its
    # reply (a loaded machine): one line either way.
    assert lines[0].startswith("renewing generation leases failed ("), lines
    assert lines[-1].startswith("renewing generation leases works again after"), lines
    assert len(lines) <= 4, lines
