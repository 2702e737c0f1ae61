"""chatscale.redis.group: concurrent callers' script calls and commands share round trips
on one connection, against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from chatscale.redis import RedisConnection
from chatscale.redis.group import SharedCalls
from chatscale.streams.scripts import LuaScript

pytestmark = pytest.mark.timeout(30)


ECHO = LuaScript.from_source("echo", "redis.call('RPUSH', KEYS[1], ARGV[1]) return ARGV[1]")
FAILING = LuaScript.from_source("failing", "return redis.error_reply('refused: ' .. ARGV[1])")


class Counted(SharedCalls):
    """Counts the round trips (the line's), and what each carried."""

    def __init__(self, client: Any, timeout_s: float, scripts: Sequence[LuaScript] = ()) -> None:
        super().__init__(client, timeout_s, scripts)
        self.sizes: list[int] = []
        line = self._line
        assert line is not None
        inner = line.round_trip

        async def round_trip(commands: Sequence[Sequence[Any]]) -> list[Any]:
            self.sizes.append(len(commands))
            return await inner(commands)

        line.round_trip = round_trip  # type: ignore[method-assign]


@pytest.fixture
async def calls(standalone_conn: RedisConnection) -> AsyncIterator[Counted]:
    client: Any = standalone_conn.client
    await client.script_load(ECHO.source)
    held = Counted(client, timeout_s=5)
    yield held
    await held.close()


async def test_concurrent_calls_share_round_trips_in_order(
    calls: Counted, standalone_conn: RedisConnection
) -> None:
    key = standalone_conn.keys.key("group-order")
    replies = await asyncio.gather(*(calls.script(ECHO, [key], [str(i)]) for i in range(50)))
    assert replies == [str(i).encode() for i in range(50)]
    # Made in one turn of the loop: one round trip for all fifty, run in the calls' order.
    assert calls.sizes == [50]
    stored = await standalone_conn.client.lrange(key, 0, -1)
    assert stored == [str(i).encode() for i in range(50)]
    # Calls made while a round trip is in flight go together in the next one.
    first = asyncio.ensure_future(calls.script(ECHO, [key], ["a"]))
    await asyncio.sleep(0)  # its round trip is under way
    later = [asyncio.ensure_future(calls.script(ECHO, [key], [f"b{i}"])) for i in range(10)]
    await asyncio.gather(first, *later)
    assert calls.sizes[1:] == [1, 10]


async def test_commands_share_round_trips_with_scripts_and_keep_redis_replies(
    calls: Counted, standalone_conn: RedisConnection
) -> None:
    key = standalone_conn.keys.key("group-commands")
    await standalone_conn.client.hset(key, mapping={"a": "1", "b": "2"})
    replies = await asyncio.gather(
        calls.command("HGETALL", key, key=key),
        calls.script(ECHO, [key + ":list"], ["x"]),
        calls.command("HGET", key, "b", key=key),
        calls.command("XRANGE", key + ":none", "-", "+", "COUNT", 5, key=key + ":none"),
    )
    assert calls.sizes == [4]
    # As Redis sends them, parsed by hiredis (no reply callback of the client): a map
    # under RESP3, which the connections speak, a flat list under RESP2.
    assert replies[0] in ({b"a": b"1", b"b": b"2"}, [b"a", b"1", b"b", b"2"])
    assert list(replies[1:]) == [b"x", b"2", []]
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await calls.command("LRANGE", key, 0, -1, key=key)


async def test_an_error_reply_goes_to_its_caller_alone(
    calls: Counted, standalone_conn: RedisConnection
) -> None:
    key = standalone_conn.keys.key("group-error")
    outcomes = await asyncio.gather(
        calls.script(ECHO, [key], ["1"]),
        calls.script(FAILING, [key], ["2"]),
        calls.script(ECHO, [key], ["3"]),
        return_exceptions=True,
    )
    assert outcomes[0] == b"1" and outcomes[2] == b"3"
    assert isinstance(outcomes[1], ResponseError) and "refused: 2" in str(outcomes[1])


async def test_a_script_redis_forgot_is_loaded_and_its_calls_sent_again(
    calls: Counted, standalone_conn: RedisConnection
) -> None:
    key = standalone_conn.keys.key("group-flush")
    # A script this Redis has never seen.
    fresh = LuaScript.from_source("fresh", f"return ARGV[1] .. '-{key}'")
    replies = await asyncio.gather(
        calls.script(fresh, [key], ["x"]), calls.script(ECHO, [key], ["y"])
    )
    assert list(replies) == [f"x-{key}".encode(), b"y"]
    assert calls.sizes == [2, 1]  # the unknown script's call went again, alone
    assert await standalone_conn.client.lrange(key, 0, -1) == [b"y"]  # ECHO ran once


async def test_the_scripts_named_are_loaded_with_the_first_round_trip(
    standalone_conn: RedisConnection,
) -> None:
    key = standalone_conn.keys.key("group-preload")
    fresh = LuaScript.from_source("preloaded", f"return ARGV[1] .. '-{key}'")
    held = Counted(standalone_conn.client, timeout_s=5, scripts=(fresh,))
    try:
        assert await held.script(fresh, [key], ["x"]) == f"x-{key}".encode()
        assert held.sizes == [1]  # no NOSCRIPT, no second round trip
    finally:
        await held.close()


async def test_close_fails_the_calls_left(calls: Counted, standalone_conn: RedisConnection) -> None:
    key = standalone_conn.keys.key("group-close")
    assert await calls.script(ECHO, [key], ["1"]) == b"1"
    await calls.close()
    with pytest.raises(RedisConnectionError, match="closed"):
        await calls.script(ECHO, [key], ["2"])


@pytest.mark.sentinel
async def test_a_node_that_became_a_replica_is_left_for_the_next_round_trip(
    redis_sentinel: Any,
) -> None:
    # As after a failover: the held connection's node refuses writes. The caller gets the
    # refusal (a 503 to a client, which retries) and the line connects again next time.
    client: Any = redis.asyncio.Redis.from_url(redis_sentinel.replica.url())
    calls = SharedCalls(client, timeout_s=5)
    try:
        with pytest.raises(ReadOnlyError):
            await calls.script(ECHO, ["group-readonly"], ["1"])
        assert calls._line is not None and calls._line._conn is None
    finally:
        await calls.close()
        await client.aclose()


@pytest.mark.cluster
async def test_on_cluster_calls_go_to_their_slots_nodes(cluster_conn: RedisConnection) -> None:
    client: Any = cluster_conn.client
    calls = SharedCalls(client, timeout_s=5)
    try:
        # Keys on every master: each call runs on its slot's node, in order per key.
        keys = [cluster_conn.keys.key(f"group-{{{i}}}") for i in range(30)]
        replies = await asyncio.gather(
            *(calls.script(ECHO, [key], [str(n)]) for n in range(3) for key in keys)
        )
        assert replies == [str(n).encode() for n in range(3) for _ in keys]
        for key in keys:
            assert await client.lrange(key, 0, -1) == [b"0", b"1", b"2"]
        assert len(calls._lines) == len(client.get_primaries())
        # A slot the client maps to the wrong node: the node answers MOVED, and the call
        # goes again through the client, which follows it.
        key = keys[0]
        right = client.get_node_from_key(key)
        wrong = next(n for n in client.get_primaries() if n.name != right.name)
        slot = client.keyslot(key)
        client.nodes_manager.slots_cache[slot] = [wrong]
        assert await calls.script(ECHO, [key], ["moved"]) == b"moved"
        assert (await client.lrange(key, 0, -1))[-1] == b"moved"
        # The client learnt where the slot is: the next call goes there at once.
        assert client.get_node_from_key(key).name == right.name
        assert await calls.script(ECHO, [key], ["after"]) == b"after"
        # A command too: on its slot's node, and after a MOVED through the client.
        await client.hset(key + ":h", mapping={"f": "v"})
        pairs = ({b"f": b"v"}, [b"f", b"v"])
        assert await calls.command("HGETALL", key + ":h", key=key + ":h") in pairs
        client.nodes_manager.slots_cache[client.keyslot(key + ":h")] = [wrong]
        assert await calls.command("HGETALL", key + ":h", key=key + ":h") in pairs
        assert client.get_node_from_key(key + ":h").name == right.name
    finally:
        await calls.close()
