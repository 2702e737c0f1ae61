"""Tests of the real-Redis harness itself, using plain redis-py clients."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from tests.harness.fixtures import ClusterFactory, SentinelFactory, StandaloneFactory
from tests.harness.servers import (
    CLUSTER_SLOTS,
    AclRedisServer,
    ClusterHandle,
    RedisServer,
    SentinelHandle,
    free_port,
)

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(60)

FAST: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}


def no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


async def eventually(action: Callable[[], Awaitable[Any]], seconds: float = 15.0) -> Any:
    """Retry ``action`` on Redis errors until it succeeds or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await action()
        except RedisError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)


def make_sentinel(addresses: list[tuple[str, int]], **kwargs: Any) -> Sentinel:
    """``Sentinel(...)``; its ``__init__`` is unannotated in redis-py."""
    return cast(Sentinel, cast(Any, Sentinel)(addresses, **kwargs))


async def command(client: redis.asyncio.Redis, *args: str) -> Any:
    """``execute_command`` (unannotated in redis-py's asyncio client)."""
    return await cast(Any, client).execute_command(*args)


async def close_sentinel(sentinel: Sentinel) -> None:
    """``Sentinel`` has no aclose(): close its per-Sentinel clients."""
    for client in sentinel.sentinels:
        await client.aclose()


# --------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------


async def test_standalone_set_get(redis_standalone: RedisServer) -> None:
    client = redis.asyncio.from_url(redis_standalone.url(), decode_responses=True)
    try:
        assert await client.set("harness:standalone", "v1")
        assert await client.get("harness:standalone") == "v1"
    finally:
        await client.aclose()
    assert redis_standalone.url() == f"redis://127.0.0.1:{redis_standalone.port}/0"
    assert redis_standalone.cli("GET", "harness:standalone").strip() == "v1"


def test_free_port_reserves_cluster_bus_port() -> None:
    port = free_port(cluster_bus=True)
    assert 1024 < port <= 65535 - 10000
    assert free_port() != port


@pytest.mark.slow
async def test_restart_keeps_port_and_config(standalone_factory: StandaloneFactory) -> None:
    server = standalone_factory(password="s3cret:/@")
    port, pid = server.port, server.pid
    url = server.url()
    assert url.startswith("redis://:s3cret%3A%2F%40@127.0.0.1:")

    server.restart()
    assert server.port == port
    assert server.pid != pid
    client = redis.asyncio.from_url(url, decode_responses=True)
    try:
        assert await client.ping()
        await client.set("k", "v")
    finally:
        await client.aclose()

    server.kill()
    assert not server.running
    server.start()
    assert server.port == port
    async with server.async_client() as client:
        # No persistence: a crash loses the data.
        assert await client.get("k") is None
    unauthenticated = redis.asyncio.Redis(port=port, retry=no_retry(), **FAST)
    try:
        with pytest.raises(RedisError):
            await unauthenticated.set("k", "v")
    finally:
        await unauthenticated.aclose()

    server.stop()
    assert not server.running
    with pytest.raises(RedisConnectionError):
        async with server.async_client() as client:
            await client.ping()


# --------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------


def keys_in_distinct_slots(count: int) -> list[str]:
    keys: list[str] = []
    slots: set[int] = set()
    index = 0
    while len(keys) < count:
        key = f"harness:key:{index}"
        index += 1
        # Spread the keys over the whole slot range (one per 1/count).
        slot = key_slot(key.encode())
        bucket = slot * count // CLUSTER_SLOTS
        if bucket not in slots:
            slots.add(bucket)
            keys.append(key)
    return keys


@pytest.mark.slow
async def test_cluster_topology(redis_cluster: ClusterHandle) -> None:
    masters, replicas = redis_cluster.masters(), redis_cluster.replicas()
    assert len(masters) == 3
    assert len(replicas) == 3
    assert len(redis_cluster.urls()) == 6
    info = redis_cluster.nodes[0].cli("CLUSTER", "INFO")
    assert "cluster_state:ok" in info
    assert f"cluster_slots_assigned:{CLUSTER_SLOTS}" in info

    first = redis_cluster.nodes[0]
    cluster = RedisCluster(host=first.host, port=first.port, decode_responses=True)
    try:
        await cluster.initialize()
        slots = await cluster.cluster_slots()
        covered = sum(end - start + 1 for start, end in slots)
        assert covered == CLUSTER_SLOTS
        keys = keys_in_distinct_slots(6)
        nodes = [cluster.get_node_from_key(key) for key in keys]
        owners = {node.port for node in nodes if node is not None}
        assert len(owners) == 3  # one key per sixth of the slots: every master
        for key in keys:
            assert await cluster.set(key, key.upper())
        for key in keys:
            assert await cluster.get(key) == key.upper()
    finally:
        await cluster.aclose()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_cluster_failover_with_password(cluster_factory: ClusterFactory) -> None:
    handle = cluster_factory(password="cluster-pw")
    first = handle.nodes[0]
    cluster = RedisCluster(
        host=first.host, port=first.port, password="cluster-pw", decode_responses=True
    )
    try:
        keys = keys_in_distinct_slots(6)
        for key in keys:
            await cluster.set(key, "before")
        handle.wait_for_replication()

        victim = handle.kill_master(0)
        handle.wait_until_ok(timeout=30)
        assert victim not in handle.masters()
        assert len(handle.masters()) == 3
        assert len(handle.replicas()) == 2

        for key in keys:
            assert await eventually(functools.partial(cluster.get, key)) == "before"
            await eventually(functools.partial(cluster.set, key, "after"))

        victim.start()  # same port, same nodes.conf: rejoins as a replica
        handle.wait_until_ok(timeout=30, masters=3, replicas=3)
        assert victim.role() == "slave"
    finally:
        await cluster.aclose()


# --------------------------------------------------------------------------
# Sentinel
# --------------------------------------------------------------------------


@pytest.mark.slow
async def test_sentinel_reports_master(redis_sentinel: SentinelHandle) -> None:
    sentinel = make_sentinel(redis_sentinel.sentinel_addresses(), **FAST)
    master = sentinel.master_for("mymaster", decode_responses=True)
    try:
        assert await sentinel.discover_master("mymaster") == redis_sentinel.master.address
        replicas = await sentinel.discover_slaves("mymaster")
        assert redis_sentinel.replica.address in replicas
        await master.set("harness:sentinel", "x")
        assert await master.get("harness:sentinel") == "x"
    finally:
        await master.aclose()
        await close_sentinel(sentinel)
    url = redis_sentinel.sentinel_url()
    ports = ",".join(f"127.0.0.1:{s.port}" for s in redis_sentinel.sentinels)
    assert url == f"redis+sentinel://{ports}/mymaster"


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_sentinel_failover_promotes_replica(
    sentinel_factory: SentinelFactory,
) -> None:
    handle = sentinel_factory(password="sentinel-pw")
    assert handle.sentinel_url().startswith("redis+sentinel://:sentinel-pw@127.0.0.1:")
    old_master, old_replica = handle.master, handle.replica
    sentinel = make_sentinel(
        handle.sentinel_addresses(),
        sentinel_kwargs={"password": "sentinel-pw", **FAST},
        password="sentinel-pw",
        **FAST,
    )
    client = sentinel.master_for("mymaster", decode_responses=True)
    try:
        assert await sentinel.discover_master("mymaster") == old_master.address

        new_master = handle.failover(timeout=30)

        assert new_master is old_replica
        assert handle.master is old_replica and handle.replica is old_master
        assert await sentinel.discover_master("mymaster") == old_replica.address
        assert old_replica.role() == "master"
        assert old_master.role() == "slave"
        await eventually(lambda: client.set("harness:after-failover", "1"))
        assert await client.get("harness:after-failover") == "1"
        handle.wait_for_replication()

        # Automatic failover: the master crashes, the Sentinels elect a leader.
        crashed = handle.master
        crashed.kill()
        promoted = handle.wait_for_failover(timeout=30)
        assert promoted is old_master
        assert await sentinel.discover_master("mymaster") == old_master.address
        assert await eventually(lambda: client.get("harness:after-failover")) == "1"
    finally:
        await client.aclose()
        await close_sentinel(sentinel)


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------


async def tls_ping(server: RedisServer, **tls_kwargs: Any) -> bool:
    client = redis.asyncio.Redis(
        host=server.host, port=server.port, retry=no_retry(), **FAST, **tls_kwargs
    )
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


async def test_tls_with_right_ca(redis_tls: RedisServer) -> None:
    assert redis_tls.tls is not None
    assert await tls_ping(redis_tls, **redis_tls.tls.redis_kwargs())
    assert redis_tls.url().startswith("rediss://127.0.0.1:")
    client = redis.asyncio.from_url(redis_tls.url(tls_params=True))
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    assert redis_tls.cli("PING").strip() == "PONG"


async def test_tls_with_client_certificate(redis_tls: RedisServer) -> None:
    assert redis_tls.tls is not None
    assert await tls_ping(redis_tls, **redis_tls.tls.redis_kwargs(client_cert=True))


async def test_tls_rejects_other_ca(redis_tls: RedisServer) -> None:
    tls = redis_tls.tls
    assert tls is not None
    with pytest.raises(RedisConnectionError):
        await tls_ping(redis_tls, **tls.redis_kwargs(ca_cert=tls.other_ca_cert))


async def test_tls_rejects_untrusted_client_certificate(redis_tls: RedisServer) -> None:
    tls = redis_tls.tls
    assert tls is not None
    kwargs = tls.redis_kwargs()
    kwargs.update(ssl_certfile=str(tls.other_client_cert), ssl_keyfile=str(tls.other_client_key))
    with pytest.raises(RedisConnectionError):
        await tls_ping(redis_tls, **kwargs)


async def test_tls_server_has_no_plain_port(redis_tls: RedisServer) -> None:
    with pytest.raises(RedisConnectionError):
        await tls_ping(redis_tls)


# --------------------------------------------------------------------------
# ACL
# --------------------------------------------------------------------------


async def test_acl_user_confined_to_prefix(redis_acl: AclRedisServer) -> None:
    assert redis_acl.acl_prefix == "acltest"
    app = redis.asyncio.from_url(redis_acl.acl_url(), decode_responses=True)
    try:
        assert await app.set("acltest::x", "1")
        assert await app.get("acltest::x") == "1"
        with pytest.raises(NoPermissionError):
            await app.set("other::x", "1")
        with pytest.raises(NoPermissionError):
            await app.get("other::x")
    finally:
        await app.aclose()


async def test_acl_user_can_do_normal_app_work(redis_acl: AclRedisServer) -> None:
    key = redis_acl.acl_key
    app = redis.asyncio.Redis(**redis_acl.acl_connection_kwargs(), decode_responses=True, **FAST)
    try:
        assert await app.ping()
        assert await command(app, "HELLO", "3")
        assert await app.client_setname("chatscale-test")
        assert "redis_version" in await app.info()
        assert await app.set(key("a"), "1", ex=30)
        assert await app.expire(key("a"), 60)
        assert await app.delete(key("a")) == 1
        await app.set(key("b"), "2")
        _cursor, found = await app.scan(0, match=key("*"), count=1000)
        assert key("b") in found

        script = "return redis.call('SET', KEYS[1], ARGV[1])"
        assert await app.eval(script, 1, key("c"), "3") == "OK"
        sha = await app.script_load("return redis.call('GET', KEYS[1])")
        assert await app.evalsha(sha, 1, key("c")) == "3"
        with pytest.raises(ResponseError):
            await app.eval(script, 1, "other::c", "3")

        entry = await app.xadd(key("stream"), {"f": "v"})
        entries = await app.xrange(key("stream"))
        assert entries is not None
        assert [e[0] for e in entries] == [entry]
        read = await app.xread({key("stream"): "0"}, count=10)
        assert read

        pubsub = app.pubsub()
        try:
            await pubsub.subscribe(key("chan"))
            await pubsub.psubscribe(key("*"))
            assert await app.publish(key("chan"), "hello") == 2
            received: list[str] = []
            deadline = time.monotonic() + 5
            while len(received) < 2 and time.monotonic() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None:
                    received.append(message["data"])
            assert received == ["hello", "hello"]
        finally:
            await cast(Any, pubsub).aclose()

        with pytest.raises(NoPermissionError):
            await app.publish("other::chan", "x")
        with pytest.raises(NoPermissionError):
            await app.keys("*")
        with pytest.raises(NoPermissionError):
            await app.flushall()
        with pytest.raises(NoPermissionError):
            await app.config_get("maxmemory")
    finally:
        await app.aclose()


async def test_acl_default_user_needs_password(redis_acl: AclRedisServer) -> None:
    anonymous = redis.asyncio.Redis(port=redis_acl.port, retry=no_retry(), **FAST)
    try:
        with pytest.raises(RedisError):
            await anonymous.get("acltest::x")
    finally:
        await anonymous.aclose()
    async with redis_acl.async_client() as admin:
        assert await admin.set("other::x", "admin may")
