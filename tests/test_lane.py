"""The dedicated-connection lane of hot loops, on real redis-server processes: raw replies,
deadlines, cancellation, a killed connection, Sentinel, and giving the connection back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from chatscale.redis import RedisConnection, lane
from chatscale.redis.lane import Lane


def _client(conn: RedisConnection) -> Redis:
    assert isinstance(conn.client, Redis)
    return conn.client


async def test_raw_replies_and_the_connection_goes_back(standalone_conn: RedisConnection) -> None:
    client = _client(standalone_conn)
    key = standalone_conn.keys.key("lane")
    pool: Any = client.connection_pool
    line = Lane(client, 2.0)
    assert await line.execute("PING") == b"PONG"
    entry = await line.execute("XADD", key, "*", "d", b"x")
    reply = await line.execute("XREAD", "COUNT", 5, "STREAMS", key, "0-0")
    # RESP3 (chatscale's default) answers a map, RESP2 a list of pairs.
    streams = list(reply.items()) if isinstance(reply, dict) else reply
    assert streams[0][0] == key.encode()
    assert streams[0][1][0][0] == entry and streams[0][1][0][1] == [b"d", b"x"]
    # (redis-py's pool has no public view of its connections: its own accessors.)
    taken = len(list(pool._get_in_use_connections()))
    await line.close()
    assert len(list(pool._get_in_use_connections())) == taken - 1
    # The lane's deadline never leaks into the pool: redis-py's socket timeout is back.
    timeout = standalone_conn.config.socket_timeout_s
    assert all(c.socket_timeout == timeout for c in pool._get_free_connections())
    with pytest.raises(RedisConnectionError):
        await line.execute("PING")


async def test_a_deadline_or_a_cancellation_never_leaves_a_stale_reply(
    standalone_conn: RedisConnection,
) -> None:
    client = _client(standalone_conn)
    key = standalone_conn.keys.key("never-pushed")
    line = Lane(client, 0.2)
    with pytest.raises(TimeoutError):
        await line.execute("BLPOP", key, 0)
    # BLPOP's reply, were it to come, went with the dropped connection.
    await client.rpush(key, b"late")
    assert await line.execute("PING") == b"PONG"
    assert await client.lpop(key) == b"late"
    task = asyncio.create_task(line.execute("BLPOP", key, 0, extra_timeout_s=30))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.rpush(key, b"again")
    assert await line.execute("PING") == b"PONG"
    assert await client.lpop(key) == b"again"
    await line.close()


async def test_server_errors_are_raised_and_the_lane_goes_on(
    standalone_conn: RedisConnection,
) -> None:
    line = Lane(_client(standalone_conn), 2.0)
    with pytest.raises(ResponseError):
        await line.execute("NOSUCHCOMMAND")
    assert await line.execute("PING") == b"PONG"
    await line.close()


async def test_a_killed_connection_is_replaced(
    standalone_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(standalone_conn)
    line = Lane(client, 2.0)
    first = await line.execute("CLIENT", "ID")
    await client.execute_command("CLIENT", "KILL", "ID", first)
    # Fresh from use: the error is the caller's to handle (the loops retry)...
    with pytest.raises(RedisConnectionError):
        await line.execute("PING")
    second = await line.execute("CLIENT", "ID")
    assert second != first
    # ...but a connection idle for a while is retried once, transparently.
    monkeypatch.setattr(lane, "_STALE_S", 0.0)
    await client.execute_command("CLIENT", "KILL", "ID", second)
    await asyncio.sleep(0.01)
    third = await line.execute("CLIENT", "ID")
    assert third not in (first, second)
    await line.close()


async def test_one_caller_at_a_time(standalone_conn: RedisConnection) -> None:
    line = Lane(_client(standalone_conn), 2.0)
    key = standalone_conn.keys.key("busy")
    blocked = asyncio.create_task(line.execute("BLPOP", key, 1))
    await asyncio.sleep(0.05)
    assert line.busy
    with pytest.raises(RuntimeError):
        await line.execute("PING")
    assert await blocked is None
    assert not line.busy
    await line.close()


@pytest.mark.sentinel
async def test_sentinel_lane_talks_to_the_master(sentinel_conn: RedisConnection) -> None:
    line = Lane(_client(sentinel_conn), 2.0)
    role = await line.execute("ROLE")
    assert role[0] == b"master"
    key = sentinel_conn.keys.key("lane")
    await line.execute("SET", key, b"v")
    assert await sentinel_conn.client.get(key) == b"v"
    await line.close()
