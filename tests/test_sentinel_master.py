"""On Sentinel, every connection goes to the master that all answering sentinels name
(:mod:`chatscale.redis.sentinel`): while they disagree (a failover settling), none is made.

redis-py alone takes the first sentinel's answer: after a failover, connections landed on a
former master that one sentinel still named, and the instance beat and stored where no other
instance looked (needless takeovers, lost answers in the fault checker's Sentinel runs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chatscale.redis import connect
from chatscale.redis.sentinel import AgreedSentinelPool, SentinelsDisagree
from tests.conftest import redis_config, unique_prefix

pytestmark = [pytest.mark.sentinel, pytest.mark.timeout(90)]


def _monitor(sentinel: Any, service: str, host: str, port: int) -> None:
    """Make one sentinel monitor ``service`` at ``host:port`` (it then names that node)."""
    with sentinel.client() as client:
        client.execute_command("SENTINEL", "REMOVE", service)
        client.execute_command("SENTINEL", "MONITOR", service, host, str(port), "2")


async def test_no_connection_while_the_sentinels_disagree(sentinel_factory: Any) -> None:
    deployment = sentinel_factory()
    service = deployment.service_name
    master, replica = deployment.master, deployment.replica
    conn = await connect(
        redis_config(
            deployment.sentinel_url(),
            prefix=unique_prefix(),
            redis_retry_max_attempts=1,
            redis_retry_max_delay=100,
        )
    )
    key = conn.keys.key("k")
    pool = getattr(conn.client, "connection_pool", None)
    assert isinstance(pool, AgreedSentinelPool)
    try:
        await conn.client.set(key, b"from the master")
        # The first sentinel names the replica (as a sentinel that has not yet heard of a
        # failover names the former master): it answers first, and redis-py alone would
        # connect there and read from it.
        _monitor(deployment.sentinels[0], service, replica.host, replica.port)
        with pytest.raises(SentinelsDisagree, match="waiting until they agree"):
            await pool.get_master_address()
        pool.forget_master()
        for _ in range(3):
            with pytest.raises(RedisConnectionError):
                await conn.client.get(key)
        # Agreement again: commands run, on the master.
        _monitor(deployment.sentinels[0], service, master.host, master.port)
        assert await pool.get_master_address() == (master.host, master.port)
        assert await conn.client.get(key) == b"from the master"
        info = await conn.client.info("server")
        assert int(info["tcp_port"]) == master.port
    finally:
        await conn.close()


async def test_a_connection_to_a_master_no_longer_named_is_not_reused(
    sentinel_factory: Any,
) -> None:
    deployment = sentinel_factory()
    conn = await connect(redis_config(deployment.sentinel_url(), prefix=unique_prefix()))
    pool = getattr(conn.client, "connection_pool", None)
    assert isinstance(pool, AgreedSentinelPool)
    try:
        # A connection in use while the master moved: it still points at the old address.
        held = await pool.get_connection()
        assert held.is_connected
        pool.master_address = ("127.0.0.1", 1)  # what the sentinels name now (elsewhere)
        await pool.release(held)
        # Before its next use it is dropped and made again, to the master the sentinels
        # actually name.
        assert await conn.client.ping()
        assert pool.master_address == (deployment.master.host, deployment.master.port)
        reused = await pool.get_connection()
        try:
            assert (reused.host, reused.port) == pool.master_address
        finally:
            await pool.release(reused)
        await asyncio.sleep(0)
    finally:
        await conn.close()
