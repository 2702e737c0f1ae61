"""chatscale's client on every topology: commands, pub/sub, Lua, pipelines, isolation,
TLS, ACL, failover, keep-alive and the waiting pool, all on real redis-server processes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chatscale.errors import RedisUnavailableError
from chatscale.redis import RedisConnection, Topology, connect, describe
from tests.conftest import redis_config, unique_prefix

SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[2])"


async def exercise(conn: RedisConnection) -> None:
    """What chatscale does with a connection: every kind of command it relies on."""
    client, keys = conn.client, conn.keys
    await client.set(keys.key("plain"), b"v", px=60_000)
    assert await client.get(keys.key("plain")) == b"v"
    # A Lua script over two keys of one slot (hash tag).
    k1, k2 = keys.tagged("t", "job1", "a"), keys.tagged("t", "job1", "b")
    assert await client.eval(SCRIPT, 2, k1, k2, "x", "5") == 5
    assert await client.get(k1) == b"x"
    # A pipeline over keys of many slots.
    pipe = client.pipeline(transaction=False)
    for i in range(20):
        pipe.set(keys.key("p", str(i)), str(i), px=60_000)
    for i in range(20):
        pipe.get(keys.key("p", str(i)))
    results = await pipe.execute()
    assert results[20:] == [str(i).encode() for i in range(20)]
    # A stream (resumable streams use them).
    stream = keys.tagged("s", "job1", "log")
    await client.xadd(stream, {"e": "1"})
    entries = await client.xrange(stream)
    assert entries is not None and len(entries) == 1
    # Pub/sub on a prefixed channel.
    pubsub = client.pubsub()
    channel = keys.channel("chan")
    try:
        await pubsub.subscribe(channel)
        await _until_subscribed(pubsub)
        receivers = await client.publish(channel, b"hello")
        assert receivers >= 1
        message = await _next_message(pubsub)
        assert message["data"] == b"hello"
        assert message["channel"] == channel.encode()
    finally:
        await pubsub.aclose()
    for key in [keys.key("plain"), k1, k2, stream] + [keys.key("p", str(i)) for i in range(20)]:
        await client.delete(key)


async def _until_subscribed(pubsub: Any) -> None:
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message and message["type"] == "subscribe":
                return


async def _next_message(pubsub: Any) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                return dict(message)


async def test_every_topology_does_everything(redis_conn: RedisConnection) -> None:
    await exercise(redis_conn)


async def test_topologies_are_detected(
    standalone_conn: RedisConnection,
    cluster_conn: RedisConnection,
    sentinel_conn: RedisConnection,
) -> None:
    assert standalone_conn.topology is Topology.STANDALONE
    assert cluster_conn.topology is Topology.CLUSTER and cluster_conn.is_cluster
    assert sentinel_conn.topology is Topology.SENTINEL and not sentinel_conn.is_cluster


async def test_cluster_report(cluster_conn: RedisConnection) -> None:
    report = await describe(cluster_conn)
    assert report.topology == "cluster"
    assert len([m for m in report.masters if "(no slots)" not in m]) == 3
    assert len(report.masters) + len(report.replicas) == 6
    assert report.slots_covered == 16384
    assert report.server_version.startswith("7.")
    assert report.rtt_ms > 0


async def test_sentinel_report(sentinel_conn: RedisConnection, redis_sentinel: Any) -> None:
    report = await describe(sentinel_conn)
    assert report.sentinel_master is not None
    assert report.sentinel_master.endswith(f":{redis_sentinel.master.port}") or (
        report.sentinel_master.endswith(f":{redis_sentinel.replica.port}")
    )
    assert len(report.replicas) == 1


async def test_two_prefixes_never_see_each_other(redis_standalone: Any, make_conn: Any) -> None:
    a: RedisConnection = await make_conn(redis_standalone.url(), unique_prefix())
    b: RedisConnection = await make_conn(redis_standalone.url(), unique_prefix())
    await a.client.set(a.keys.key("same"), b"from-a")
    await b.client.set(b.keys.key("same"), b"from-b")
    assert await a.client.get(a.keys.key("same")) == b"from-a"
    assert await b.client.get(b.keys.key("same")) == b"from-b"
    # Scanning one prefix finds none of the other's keys.
    found = [k async for k in a.client.scan_iter(match=a.keys.all_pattern)]
    assert found == [a.keys.key("same").encode()]
    # The "same" channel name is two channels.
    sub_b = b.client.pubsub()
    try:
        await sub_b.subscribe(b.keys.channel("events"))
        await _until_subscribed(sub_b)
        assert await a.client.publish(a.keys.channel("events"), b"x") == 0
        assert await sub_b.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    finally:
        await sub_b.aclose()
    await a.client.delete(a.keys.key("same"))
    await b.client.delete(b.keys.key("same"))


async def test_tls_with_the_right_ca(redis_tls: Any) -> None:
    uri = redis_tls.url()
    assert uri.startswith("rediss://")
    conn = await connect(
        redis_config(uri, prefix=unique_prefix(), redis_ca=str(redis_tls.tls.ca_cert))
    )
    try:
        await exercise(conn)
        assert (await describe(conn)).tls is True
    finally:
        await conn.close()


async def test_mutual_tls(redis_tls: Any) -> None:
    conn = await connect(
        redis_config(
            redis_tls.url(),
            prefix=unique_prefix(),
            redis_ca=str(redis_tls.tls.ca_cert),
            redis_tls_cert=str(redis_tls.tls.client_cert),
            redis_tls_key=str(redis_tls.tls.client_key),
        )
    )
    try:
        assert await conn.client.ping()
    finally:
        await conn.close()


async def test_wrong_ca_fails_closed(redis_tls: Any) -> None:
    config = redis_config(
        redis_tls.url(),
        prefix=unique_prefix(),
        redis_ca=str(redis_tls.tls.other_ca_cert),
        redis_retry_max_attempts=1,
        redis_connect_timeout=2000,
    )
    with pytest.raises(RedisUnavailableError, match=r"(?i)certificate|tls|ssl"):
        await connect(config)


async def test_plain_client_cannot_talk_to_a_tls_port(redis_tls: Any) -> None:
    uri = redis_tls.url().replace("rediss://", "redis://")
    config = redis_config(
        uri,
        prefix=unique_prefix(),
        redis_retry_max_attempts=1,
        redis_connect_timeout=1000,
        redis_socket_timeout=1000,
    )
    with pytest.raises(RedisUnavailableError):
        await connect(config)


async def test_acl_user_can_do_everything_chatscale_does(redis_acl: Any) -> None:
    conn = await connect(
        redis_config(
            redis_acl.url(),
            prefix=redis_acl.acl_prefix,
            redis_username=redis_acl.acl_user,
            redis_password=redis_acl.acl_password,
            redis_ping_interval=1,
        )
    )
    try:
        await exercise(conn)
        await describe(conn)
        assert await conn.keepalive.ping_once() >= 1
        # Outside its prefix the user is refused: the prefix really is the boundary.
        with pytest.raises(Exception, match=r"(?i)noperm|permission"):
            await conn.client.set("otherapp::x", b"1")
    finally:
        await conn.close()


async def test_wrong_password_is_a_clear_startup_error(redis_acl: Any) -> None:
    config = redis_config(
        redis_acl.url(),
        prefix=redis_acl.acl_prefix,
        redis_username=redis_acl.acl_user,
        redis_password="wrong",
        redis_retry_max_attempts=1,
    )
    with pytest.raises(RedisUnavailableError, match=r"(?i)password|auth"):
        await connect(config)


async def test_unreachable_redis_is_a_clear_startup_error() -> None:
    config = redis_config(
        "redis://127.0.0.1:1", redis_retry_max_attempts=1, redis_connect_timeout=500
    )
    with pytest.raises(RedisUnavailableError, match=r"127\.0\.0\.1:1\b"):
        await connect(config)


async def test_pool_waits_for_a_free_connection(redis_standalone: Any, make_conn: Any) -> None:
    prefix = unique_prefix()
    conn: RedisConnection = await make_conn(
        redis_standalone.url(), prefix, redis_max_connections=2, redis_pool_timeout=5000
    )
    pusher: RedisConnection = await make_conn(redis_standalone.url(), prefix)
    key = conn.keys.key("list")
    # Ten blocking pops on two connections: the extra eight wait instead of failing.
    tasks = [asyncio.ensure_future(conn.client.blpop([key], timeout=3)) for _ in range(10)]
    await asyncio.sleep(0.1)
    for i in range(10):
        await pusher.client.rpush(key, str(i))
        await asyncio.sleep(0.01)
    results: list[Any] = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert sorted(int(r[1]) for r in results) == list(range(10))
    await conn.client.delete(key)


async def test_pool_timeout_is_an_error_not_a_hang(redis_standalone: Any, make_conn: Any) -> None:
    conn: RedisConnection = await make_conn(
        redis_standalone.url(),
        unique_prefix(),
        redis_max_connections=1,
        redis_pool_timeout=200,
    )
    blocker = asyncio.ensure_future(conn.client.blpop([conn.keys.key("none")], timeout=1))
    await asyncio.sleep(0.05)
    start = time.monotonic()
    with pytest.raises(RedisConnectionError, match="No connection available"):
        await conn.client.get(conn.keys.key("x"))
    assert time.monotonic() - start < 1.0
    await blocker


async def test_cluster_pool_waits_too(
    cluster_conn: RedisConnection, redis_cluster: Any, make_conn: Any
) -> None:
    conn: RedisConnection = await make_conn(
        ",".join(redis_cluster.urls()),
        unique_prefix(),
        redis_max_connections=2,
    )
    keys = [conn.keys.key("k", str(i)) for i in range(50)]
    await asyncio.gather(*(conn.client.set(k, b"1", px=60_000) for k in keys))
    assert await asyncio.gather(*(conn.client.get(k) for k in keys)) == [b"1"] * 50
    for node in conn.client.get_nodes():  # type: ignore[union-attr]
        assert len(node._connections) <= 2


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_keepalive_resumes_after_a_server_restart(standalone_factory: Any) -> None:
    server = standalone_factory()
    conn = await connect(redis_config(server.url(), prefix=unique_prefix(), redis_ping_interval=1))
    try:
        await conn.client.set(conn.keys.key("k"), b"1")  # one pooled connection now idle
        await asyncio.sleep(1.5)
        assert conn.keepalive.rounds >= 1
        server.restart()
        # Pings go on by themselves: the restarted server (fresh stats) receives them
        # without the application sending a single command.
        deadline = time.monotonic() + 10
        pings = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            stats = server.cli("INFO", "commandstats")
            for line in stats.splitlines():
                if line.startswith("cmdstat_ping:"):
                    pings = int(line.split("calls=")[1].split(",")[0])
            if pings >= 2:
                break
        assert pings >= 2, "keep-alive pings did not resume after the restart"
        assert await conn.client.get(conn.keys.key("k")) is None  # no persistence: empty
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(120)
async def test_cluster_master_kill_is_recovered(cluster_factory: Any) -> None:
    cluster = cluster_factory()
    conn = await connect(
        redis_config(
            ",".join(cluster.urls()),
            prefix=unique_prefix(),
            redis_retry_max_attempts=0,
            redis_retry_max_delay=500,
        )
    )
    try:
        keys = [conn.keys.key("k", str(i)) for i in range(200)]
        for k in keys:
            await conn.client.set(k, b"v")
        cluster.kill_master(0)
        start = time.monotonic()
        recovered = None
        while time.monotonic() - start < 30:
            try:
                async with asyncio.timeout(5):
                    for k in keys:
                        await conn.client.set(k, b"w")
                recovered = time.monotonic() - start
                break
            except Exception:
                await asyncio.sleep(0.2)
        assert recovered is not None, "cluster writes did not recover within 30 s"
        # Stated bound (docs/redis.md): with cluster-node-timeout 1-2 s, writes resume
        # within 15 s of a master's death.
        assert recovered < 15, recovered
        values = await asyncio.gather(*(conn.client.get(k) for k in keys))
        assert [(k, v) for k, v in zip(keys, values, strict=True) if v != b"w"] == []
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.sentinel
@pytest.mark.timeout(120)
async def test_sentinel_failover_is_followed(sentinel_factory: Any) -> None:
    deployment = sentinel_factory()
    conn = await connect(
        redis_config(
            deployment.sentinel_url(),
            prefix=unique_prefix(),
            redis_retry_max_attempts=0,
            redis_retry_max_delay=500,
        )
    )
    try:
        before = await describe(conn)
        await conn.client.set(conn.keys.key("k"), b"1")
        deployment.failover()
        start = time.monotonic()
        recovered = None
        while time.monotonic() - start < 30:
            try:
                # Every step bounded, describe() too (it asks the sentinels and the node):
                # CI once hung past pytest's 120 s in a step outside the bound.
                async with asyncio.timeout(3):
                    await conn.client.set(conn.keys.key("k"), b"2")
                    info = await conn.client.info("replication")
                    after = await describe(conn) if info.get("role") == "master" else None
                if after is not None and after.sentinel_master != before.sentinel_master:
                    recovered = time.monotonic() - start
                    break
            except Exception:
                pass
            await asyncio.sleep(0.2)
        assert recovered is not None, "the client did not follow the failover within 30 s"
        assert recovered < 15, recovered
    finally:
        async with asyncio.timeout(10):
            await conn.close()


async def test_close_is_idempotent(standalone_conn: RedisConnection) -> None:
    await standalone_conn.close()
    await standalone_conn.close()


async def test_retry_forever_still_runs_commands_on_cluster(
    redis_cluster: Any, make_conn: Any
) -> None:
    # redis-py's Cluster client runs zero attempts with Retry(retries=-1): every command
    # silently returned None. REDIS_RETRY_MAX_ATTEMPTS=0 must still mean "forever".
    conn: RedisConnection = await make_conn(
        ",".join(redis_cluster.urls()), unique_prefix(), redis_retry_max_attempts=0
    )
    assert await conn.client.set(conn.keys.key("k"), b"1") is True
    assert await conn.client.get(conn.keys.key("k")) == b"1"
    await conn.client.delete(conn.keys.key("k"))


async def test_a_write_on_a_connection_closed_under_it_is_a_connection_error() -> None:
    # redis-py leaks "'NoneType' object has no attribute 'writelines'" (redis/redis-py#4287)
    # when a connection is closed while a Cluster pipeline writes on it: the chat server
    # answered 500 instead of 503 (fault checker, cluster seed 3001). Reproduced on a real
    # redis-py connection whose writer is gone.
    from redis.asyncio import Connection

    from chatscale.redis.client import _closed_writes_are_connection_errors

    connection = Connection(host="127.0.0.1", port=1)
    with pytest.raises(RedisConnectionError, match="connection closed during a write"):
        async with _closed_writes_are_connection_errors():
            await connection._send_packed_command([b"PING\r\n"])
    # An AttributeError of our own code stays what it is.
    with pytest.raises(AttributeError):
        async with _closed_writes_are_connection_errors():
            None.missing  # type: ignore[attr-defined]  # noqa: B018


def test_a_write_on_a_closed_uvloop_transport_is_a_connection_error(redis_standalone: Any) -> None:
    # The same race under uvloop: "unable to perform operation on <TCPTransport
    # closed=True ...>; the handler is closed" (checker cluster seed 3002).
    import uvloop
    from redis.asyncio import Connection

    from chatscale.redis.client import _closed_writes_are_connection_errors

    async def write_after_close() -> None:
        connection = Connection(host=redis_standalone.host, port=redis_standalone.port)
        await connection.connect()
        try:
            writer = connection._writer
            assert writer is not None
            writer.transport.close()
            await asyncio.sleep(0)
            with pytest.raises(RedisConnectionError, match="connection closed during a write"):
                async with _closed_writes_are_connection_errors():
                    await connection._send_packed_command([b"PING\r\n"])
        finally:
            await connection.disconnect(nowait=True)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(write_after_close(), 10))
