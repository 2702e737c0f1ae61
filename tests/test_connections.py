"""chatscale.redis.connections: every client packs its commands with hiredis, on every
topology, and Redis reads what redis-py would have sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.utils
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import DataError

from chatscale import __version__
from chatscale.ratelimit import (
    RateLimiter,
    close_limits_storage,
    create_limits_storage,
    parse_limits,
)
from chatscale.redis import RedisConnection, connect
from chatscale.redis.client import driver_info
from chatscale.redis.connections import (
    PackingConnection,
    PackingSentinelConnection,
    PackingSSLConnection,
    packing,
)
from chatscale.redis.uri import Topology
from tests.conftest import redis_config, unique_prefix

pytestmark = pytest.mark.timeout(60)

#: Commands as chatscale's stores send them, and the awkward cases of redis-py's packer.
COMMANDS: list[tuple[Any, ...]] = [
    ("GET", "chatscale:sessions:abc"),
    ("SET", b"k", b"\r\n\x00\xff", "PX", 1500),
    ("HSET", "h", "f", "é€😀", "n", -7, "x", 2.5),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", b"x" * 7000, 0),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", b"chatscale"),
    ("SET", "k", memoryview(b"viewed")),
    ("SET", "k", bytearray(b"array")),
    ("XADD", "s", "MAXLEN", "~", 1000, "*", "d", b"{}"),
]


def _joined(parts: list[bytes]) -> bytes:
    return b"".join(bytes(p) for p in parts)


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_the_packers_write_redis_pys_bytes(encoding: str) -> None:
    ours, theirs = PackingConnection(encoding=encoding), Connection(encoding=encoding)
    for command in COMMANDS:
        try:
            expected = _joined(theirs.pack_command(*command))
        except UnicodeEncodeError:
            assert encoding == "latin-1"
            with pytest.raises(UnicodeEncodeError):
                ours.pack_command(*command)
            continue
        assert _joined(ours.pack_command(*command)) == expected, command
    fits = [c for c in COMMANDS if encoding == "utf-8" or c[0] != "HSET"]
    assert _joined(ours.pack_commands(fits)) == _joined(theirs.pack_commands(fits))


@pytest.mark.parametrize("value", [True, None, object()])
def test_what_redis_py_refuses_is_refused(value: Any) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", value)
    with pytest.raises(DataError):
        PackingConnection().pack_command("SET", "k", value)


def test_each_class_has_its_twin() -> None:
    assert packing(Connection) is PackingConnection
    assert packing(SSLConnection) is PackingSSLConnection
    assert packing(SentinelManagedConnection) is PackingSentinelConnection
    assert packing(PackingConnection) is PackingConnection  # packs already
    assert issubclass(PackingSSLConnection, SSLConnection)


def _classes(client: Any) -> set[type]:
    """The connection classes ``client`` builds (on Cluster: on every node)."""
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes()
        assert nodes
        return {node.connection_class for node in nodes}
    return {client.connection_pool.connection_class}


def _expected(conn: RedisConnection) -> type:
    sentinel = conn.config.topology is Topology.SENTINEL
    return PackingSentinelConnection if sentinel else PackingConnection


async def _exercise(conn: RedisConnection) -> None:
    """Single commands, a pipeline and pub/sub, with values packed in C and in Python."""
    client: Any = conn.client
    key, other = conn.keys.key("packed"), conn.keys.key("packed-list")
    value = b"\r\n\x00\xff binary"
    await client.set(key, value, px=60_000)
    assert await client.get(key) == value
    await client.hset(key + ":h", mapping={"text": "é€😀", "n": -7, "f": 2.5})
    assert await client.hgetall(key + ":h") == {b"text": "é€😀".encode(), b"n": b"-7", b"f": b"2.5"}
    async with client.pipeline(transaction=False) as pipe:
        pipe.rpush(other, memoryview(b"m"), bytearray(b"b"), 3)
        pipe.lrange(other, 0, -1)
        pipe.delete(key, key + ":h", other)
        replies = await pipe.execute()
    assert replies[1] == [b"m", b"b", b"3"]
    pubsub = client.pubsub()
    channel = conn.keys.key("packed-channel")
    try:
        await pubsub.subscribe(channel)
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        await client.publish(channel, value)
        async with asyncio.timeout(5):
            while (message := await pubsub.get_message(timeout=1)) is None:
                pass
        assert message["data"] == value
    finally:
        await pubsub.aclose()


async def test_every_topology_packs_with_hiredis(redis_conn: RedisConnection) -> None:
    await _exercise(redis_conn)
    assert _classes(redis_conn.client) == {_expected(redis_conn)}


async def test_tls_packs_with_hiredis(redis_tls: Any) -> None:
    conn = await connect(
        redis_config(redis_tls.url(), prefix=unique_prefix(), redis_ca=str(redis_tls.tls.ca_cert))
    )
    try:
        await _exercise(conn)
        assert _classes(conn.client) == {PackingSSLConnection}
    finally:
        await conn.close()


async def test_the_rate_limit_storages_pack_with_hiredis(redis_conn: RedisConnection) -> None:
    storage = create_limits_storage(redis_conn.config)
    try:
        assert await storage.check()
        limiter = RateLimiter(storage, parse_limits("2/minute"), "packed")
        assert [(await limiter.hit("u")).allowed for _ in range(3)] == [True, True, False]
        client: Any = storage.bridge.storage  # type: ignore[attr-defined]
        assert _classes(client) == {_expected(redis_conn)}
    finally:
        await close_limits_storage(storage)


async def test_the_tls_rate_limit_storage_packs_with_hiredis(redis_tls: Any) -> None:
    config = redis_config(
        redis_tls.url(), prefix=unique_prefix(), redis_ca=str(redis_tls.tls.ca_cert)
    )
    storage = create_limits_storage(config)
    try:
        assert await storage.check()
        client: Any = storage.bridge.storage  # type: ignore[attr-defined]
        assert _classes(client) == {PackingSSLConnection}
    finally:
        await close_limits_storage(storage)


async def test_new_connections_do_not_look_up_redis_pys_version(
    redis_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-py makes a DriverInfo per new connection when given none, and each reads the
    # package's metadata from disk (about 1 ms of CPU): a burst of connections paid it each.
    looked_up = 0
    real = redis.utils.get_lib_version

    def counting() -> str:
        nonlocal looked_up
        looked_up += 1
        return str(real())

    monkeypatch.setattr(redis.utils, "get_lib_version", counting)
    client: Any = redis_conn.client
    # Twenty commands at once: the pool (each node's, on Cluster) opens new connections.
    keys = [redis_conn.keys.key(f"driver-{i}") for i in range(20)]
    await asyncio.gather(*(client.get(key) for key in keys))
    assert looked_up == 0
    # What the connections tell Redis (CLIENT SETINFO; Redis 7.2 and later list it).
    assert driver_info().formatted_name == f"redis-py(chatscale_v{__version__})"
    assert driver_info().lib_version == real()
