"""chatscale.redis.line: the stream writer's own connection, against a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from chatscale.redis import RedisConnection
from chatscale.redis.line import Line

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def line(standalone_conn: RedisConnection) -> Any:
    client: Any = standalone_conn.client
    held = Line(client.connection_pool)
    yield held
    await held.close()


async def _id(line: Line) -> int:
    (client_id,) = await line.round_trip([("CLIENT", "ID")])
    assert isinstance(client_id, int)
    return client_id


async def test_replies_come_in_order_and_error_replies_are_returned(
    line: Line, standalone_conn: RedisConnection
) -> None:
    key = standalone_conn.keys.key("line")
    replies = await line.round_trip(
        [("SET", key, "v"), ("EVALSHA", "0" * 40, 0), ("INCR", key), ("GET", key)]
    )
    assert replies[0] == b"OK" and replies[3] == b"v"
    assert isinstance(replies[1], NoScriptError)
    assert isinstance(replies[2], ResponseError)  # not an integer
    # One connection serves every round trip.
    assert await _id(line) == await _id(line)


async def test_each_connection_loads_the_scripts_in_its_first_round_trip(
    standalone_conn: RedisConnection,
) -> None:
    client: Any = standalone_conn.client
    # A script no other test loads: its text names this test's key prefix.
    source = f"return 'loaded {standalone_conn.keys.key('line-script')}'"
    sha = hashlib.sha1(source.encode()).hexdigest()
    broken = "this is not lua ("
    held = Line(client.connection_pool, scripts=(broken, source))
    try:
        assert await client.script_exists(sha) == [False]
        # The first EVALSHA finds the script; the failed load of the other is no error, and
        # the replies are the caller's commands' alone, in order.
        replies = await held.round_trip([("EVALSHA", sha, 0), ("PING",)])
        assert replies == [source[8:-1].encode(), b"PONG"]
        # A Redis that forgot its scripts (a restart, a failover to a node without them):
        # the line's next connection loads them again before its first command.
        await client.script_flush()
        (forgotten,) = await held.round_trip([("EVALSHA", sha, 0)])
        assert isinstance(forgotten, NoScriptError)
        await client.client_kill_filter(_id=str(await _id(held)))
        assert await held.round_trip([("EVALSHA", sha, 0)]) == [source[8:-1].encode()]
    finally:
        await held.close()


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    line: Line, standalone_conn: RedisConnection
) -> None:
    first = await _id(line)
    await standalone_conn.client.client_kill_filter(_id=str(first))
    # The round trip after the kill reconnects once, without an error.
    assert await line.round_trip([("PING",)]) == [b"PONG"]
    assert await _id(line) != first


async def test_a_round_trip_cut_short_drops_its_connection(
    line: Line, standalone_conn: RedisConnection
) -> None:
    waited, other = standalone_conn.keys.key("line-list"), standalone_conn.keys.key("line-other")
    first = await _id(line)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await line.round_trip([("BLPOP", waited, 5)])
    # The BLPOP's reply, had its connection been kept, would now be the next one read.
    await standalone_conn.client.lpush(waited, b"late")
    assert await line.round_trip([("GET", other)]) == [None]
    assert await _id(line) != first
    assert await standalone_conn.client.llen(waited) == 1  # nobody popped it


async def test_close_gives_the_connection_back(standalone_conn: RedisConnection) -> None:
    client: Any = standalone_conn.client
    pool = client.connection_pool
    held = Line(pool)
    await held.round_trip([("PING",)])
    in_use = len(pool._in_use_connections)
    await held.close()
    assert len(pool._in_use_connections) == in_use - 1


async def test_a_ping_goes_first_only_after_the_connection_sat_idle(
    redis_standalone: Any,
) -> None:
    # A health-check interval (REDIS_PING_INTERVAL): the line pings a connection idle past
    # it, as redis-py does, and only then (not once an interval on a busy connection).
    # Plain clients: chatscale's also pings idle pool connections, and the counting one has
    # no interval.
    client = redis.asyncio.Redis(
        host=redis_standalone.host, port=redis_standalone.port, health_check_interval=1
    )
    counter = redis.asyncio.Redis(host=redis_standalone.host, port=redis_standalone.port)
    held = Line(client.connection_pool)
    try:

        async def pings() -> int:
            stats = await counter.info("commandstats")
            return int(stats.get("cmdstat_ping", {}).get("calls", 0))

        await held.round_trip([("PING",)])
        before = await pings()
        # Busy for 1.5 s, a round trip every 0.1 s: never idle for the interval.
        for _ in range(15):
            await held.round_trip([("GET", "chatscale-test-line-idle")])
            await asyncio.sleep(0.1)
        assert await pings() == before
        await asyncio.sleep(1.3)
        await held.round_trip([("GET", "chatscale-test-line-idle")])
        assert await pings() == before + 1
    finally:
        await held.close()
        await client.aclose()
        await counter.aclose()


@pytest.mark.sentinel
async def test_a_node_that_became_a_replica_drops_the_connection(redis_sentinel: Any) -> None:
    # As after a failover that demoted the line's node without closing its clients: the
    # refusal is returned like any error reply, and the next round trip connects again
    # (through Sentinel's pool, to the master of the moment).
    client: Any = redis.asyncio.Redis.from_url(redis_sentinel.replica.url())
    held = Line(client.connection_pool)
    try:
        replies = await held.round_trip([("SET", "line-readonly", "1"), ("PING",)])
        assert isinstance(replies[0], ReadOnlyError) and replies[1] == b"PONG"
        assert held._conn is None
        assert await held.round_trip([("PING",)]) == [b"PONG"]
    finally:
        await held.close()
        await client.aclose()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_transport_closed_under_the_line_is_a_lost_connection(
    loop: str, redis_standalone: Any
) -> None:
    # The transport closed without redis-py knowing (as when the server's reset reaches the
    # loop first): the connection still looks connected. uvloop refuses the write with a
    # RuntimeError, the stdlib loop drops it and the read ends; both are a lost connection,
    # retried once on a new one.
    uvloop = pytest.importorskip("uvloop") if loop == "uvloop" else None

    async def scenario() -> None:
        client = redis.asyncio.Redis(host=redis_standalone.host, port=redis_standalone.port)
        held = Line(client.connection_pool)
        try:
            first = await _id(held)
            conn: Any = held._conn
            conn._writer.transport.close()
            await asyncio.sleep(0)
            assert conn.is_connected
            assert await held.round_trip([("PING",)]) == [b"PONG"]
            assert await _id(held) != first
        finally:
            await held.close()
            await client.aclose()

    factory = uvloop.new_event_loop if uvloop is not None else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(scenario(), 10))
