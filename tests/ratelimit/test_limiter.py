"""Request rate limits through ``limits``' async storages fed from chatscale's settings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatscale.errors import ConfigError
from chatscale.ratelimit import RateLimiter, create_limits_storage, parse_limits
from chatscale.redis import RedisConnection, connect
from tests.conftest import redis_config, unique_prefix
from tests.ratelimit.helpers import open_limits


async def test_exactly_the_limit_is_admitted(backend: RedisConnection | None) -> None:
    async with open_limits(backend, chat_rate_limit="5/minute") as limits:
        decisions = [await limits.chat.limiter.hit("user:a") for _ in range(8)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
        refused = decisions[-1]
        assert 55 <= refused.retry_after <= 60
        assert refused.limit == "5 per 1 minute"
        assert (await limits.chat.limiter.hit("user:b")).allowed  # another identity


async def test_concurrent_hits_never_exceed_the_limit(backend: RedisConnection | None) -> None:
    async with open_limits(backend, chat_rate_limit="10/minute") as limits:
        results = await asyncio.gather(*(limits.chat.limiter.hit("user:x") for _ in range(40)))
    assert sum(d.allowed for d in results) == 10


async def test_counters_live_under_the_deployment_prefix(redis_conn: RedisConnection) -> None:
    async with open_limits(redis_conn, chat_rate_limit="3/minute") as limits:
        await limits.chat.limiter.hit("user:{odd id}:*")
    pattern = redis_conn.keys.pattern("limits")
    found = [k async for k in redis_conn.client.scan_iter(match=pattern)]  # every master
    assert len(found) == 1
    key = found[0].decode()
    assert key.startswith(redis_conn.keys.limits_prefix + ":")
    assert "{odd" not in key  # the identity was escaped: no stray hash tag or glob


async def test_two_instances_share_one_count(redis_conn: RedisConnection) -> None:
    other = await connect(redis_conn.config)
    try:
        async with (
            open_limits(redis_conn, chat_rate_limit="6/minute") as a,
            open_limits(other, chat_rate_limit="6/minute") as b,
        ):
            results = await asyncio.gather(
                *(limiter.hit("user:shared") for limiter in [a.chat.limiter, b.chat.limiter] * 6)
            )
        assert sum(d.allowed for d in results) == 6
    finally:
        await other.close()


async def test_tls_storage(redis_tls: Any) -> None:
    config = redis_config(
        redis_tls.url(), prefix=unique_prefix(), redis_ca=str(redis_tls.tls.ca_cert)
    )
    storage = create_limits_storage(config)
    try:
        assert await storage.check()
        limiter = RateLimiter(storage, parse_limits("2/minute"), "tls")
        assert [(await limiter.hit("u")).allowed for _ in range(3)] == [True, True, False]
    finally:
        from chatscale.ratelimit import close_limits_storage

        await close_limits_storage(storage)


async def test_mutual_tls_storage(redis_tls: Any) -> None:
    config = redis_config(
        redis_tls.url(),
        prefix=unique_prefix(),
        redis_ca=str(redis_tls.tls.ca_cert),
        redis_tls_cert=str(redis_tls.tls.client_cert),
        redis_tls_key=str(redis_tls.tls.client_key),
    )
    storage = create_limits_storage(config)
    try:
        limiter = RateLimiter(storage, parse_limits("1/minute"), "mtls")
        assert (await limiter.hit("u")).allowed
        assert not (await limiter.hit("u")).allowed
    finally:
        from chatscale.ratelimit import close_limits_storage

        await close_limits_storage(storage)


async def test_several_limits_each_hold(backend: RedisConnection | None) -> None:
    async with open_limits(backend, chat_rate_limit="3/second; 4/minute") as limits:
        hits = [await limits.chat.limiter.hit("user:m") for _ in range(4)]
        assert [d.allowed for d in hits] == [True, True, True, False]
        assert hits[-1].limit == "3 per 1 second"
        await asyncio.sleep(1.05)
        more = [await limits.chat.limiter.hit("user:m") for _ in range(2)]
        assert [d.allowed for d in more] == [True, False]
        assert more[-1].limit == "4 per 1 minute"


@pytest.mark.parametrize("text", ["", "lots", "0/minute", "5 per fortnight"])
def test_parse_limits_names_the_variable(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_limits(text, "MY_LIMIT")
    assert info.value.variable == "MY_LIMIT"


async def test_clear_forgets_an_identity() -> None:
    async with open_limits(None, chat_rate_limit="1/minute") as limits:
        limiter = limits.chat.limiter
        assert (await limiter.hit("user:c")).allowed
        assert not (await limiter.hit("user:c")).allowed
        await limiter.clear("user:c")
        assert (await limiter.hit("user:c")).allowed


async def test_unreachable_counter_storage_is_a_clear_start_up_error(
    standalone_conn: RedisConnection,
) -> None:
    from chatscale.config import load_settings
    from chatscale.errors import RedisUnavailableError
    from chatscale.ratelimit import RateLimits
    from tests.harness.servers import free_port

    settings = load_settings(
        use_redis=True,
        redis_uri=f"redis://127.0.0.1:{free_port()}",
        redis_connect_timeout=200,
        redis_retry_max_attempts=1,
    )
    with pytest.raises(RedisUnavailableError, match="rate-limit storage"):
        await RateLimits.create(settings, standalone_conn)


async def _limits_connections_idle_s(conn: RedisConnection) -> list[int]:
    client: Any = conn.client
    # On a Cluster: every node's clients.
    nodes = {"target_nodes": "all"} if conn.is_cluster else {}
    listed = await client.client_list(**nodes)
    clients = [c for n in listed.values() for c in n] if isinstance(listed, dict) else listed
    return [int(c["idle"]) for c in clients if c.get("name") == "chatscale-limits"]


@pytest.mark.timeout(30)
async def test_ping_interval_reaches_the_counters_connections(redis_conn: RedisConnection) -> None:
    async with open_limits(redis_conn, chat_rate_limit="5/minute", redis_ping_interval=1) as limits:
        await limits.chat.limiter.hit("user:a")  # its pooled connections now sit idle
        await asyncio.sleep(3.5)
        idle = await _limits_connections_idle_s(redis_conn)
    # Pinged every second: none was left idle for the 3.5 s without a command.
    assert idle and max(idle) <= 1, idle
