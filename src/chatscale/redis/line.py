"""A connection held by one caller that has one round trip in flight at a time (the stream
writer): pipelined commands out, replies parsed straight from hiredis.

The stream writer makes a round trip per coalescing window, and at a short window that is
thousands a second. Through the client, each took a pool checkout and release, a retry
wrapper, a task per socket write (``asyncio.wait_for`` under a socket timeout) and the
observability hooks; with the writer's task and ``asyncio.wait`` around it, more than half
of a round trip's CPU (``bench/writer_round_trip.py``, docs/benchmarks.md). The line skips
all of it. Its caller bounds the time (``asyncio.timeout``) and retries what failed, as the
writer does with every write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from chatscale.redis.replies import MORE, Replies
from chatscale.redis.resp import pack_commands


class Line:
    """One connection of ``pool`` (a redis-py asyncio ``ConnectionPool``, Sentinel's
    included), held until :meth:`close`.

    ``scripts`` are the sources of the Lua scripts its callers run by SHA. Each connection
    the line opens loads them (``SCRIPT LOAD``) in the same write as its first round trip,
    ahead of the caller's commands, so that a first ``EVALSHA`` on a new instance, a
    restarted Redis or a new master finds its script instead of costing a ``NOSCRIPT``
    reply and a second round trip. A load that fails is not an error: the script's calls
    then get ``NOSCRIPT`` as before, and callers handle it.
    """

    def __init__(self, pool: Any, scripts: Sequence[str] = ()) -> None:
        self._pool = pool
        self._conn: Any = None
        self._replies: Replies | None = None
        self._setup: list[tuple[str, str, str]] = [("SCRIPT", "LOAD", s) for s in scripts]

    async def round_trip(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` pipelined; one reply per command, an error reply as its
        exception (returned, not raised).

        Anything that cuts a round trip short (a failure, a cancellation, the caller's
        deadline) drops the connection, since a reply may be half read; the next round trip
        connects again (on Sentinel, to whichever node is master then). A connection that
        had already served and fails to be written to or read from is tried once more on a
        new one: the server may have closed it while it sat idle. Commands sent twice so
        must be safe to repeat, as the writer's are.
        """
        conn = self._conn
        if conn is None:
            conn = self._conn = await self._pool.get_connection()
        packed = pack_commands(commands, conn.encoder)
        for attempt in (1, 2):
            reused = conn.is_connected
            try:
                replies = await self._exchange(conn, packed, len(commands))
            except (RedisConnectionError, OSError):
                await conn.disconnect(nowait=True)
                if attempt == 2 or not reused:
                    raise
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
            else:
                if any(isinstance(reply, ReadOnlyError) for reply in replies):
                    await self.reset()
                return replies
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(self, conn: Any, packed: bytes, count: int) -> list[Any]:
        if not conn.is_connected:
            await conn.connect()
        # A PING first when the connection sat idle past REDIS_PING_INTERVAL (redis-py's
        # own check, which reconnects a dead connection).
        await conn.check_health()
        replies = self._replies
        skip = 0
        if replies is None or replies.stream is not conn._reader:
            # A connection this line has not written to yet: its set-up goes first.
            replies = self._replies = Replies(conn)
            if self._setup:
                skip = len(self._setup)
                packed = pack_commands(self._setup, conn.encoder) + packed
        try:
            conn._writer.write(packed)
        except RuntimeError as exc:  # uvloop refuses a write to a closed handle
            raise RedisConnectionError("Redis closed the connection") from exc
        await conn._writer.drain()
        out: list[Any] = []
        while len(out) < count + skip:
            reply = replies.next()
            if reply is MORE:
                await replies.fill()
            else:
                out.append(reply)
        if skip:
            del out[:skip]
        if conn.health_check_interval:
            # As redis-py's read_response does: the connection just answered, so the next
            # PING is due an interval from now (else a busy connection got one an interval).
            conn.next_health_check = asyncio.get_running_loop().time() + conn.health_check_interval
        return out

    async def reset(self) -> None:
        """Drop the connection: the next round trip connects again (on Sentinel, to the
        master of the moment)."""
        conn = self._conn
        if conn is not None:
            await conn.disconnect(nowait=True)
        await self.close()

    async def close(self) -> None:
        """Give the connection back to the pool."""
        conn, self._conn = self._conn, None
        self._replies = None
        if conn is not None:
            await self._pool.release(conn)


async def node_round_trip(node: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """One round trip on a connection of a Cluster node (a redis-py ``ClusterNode``), taken
    from the node's own connections and given back: ``commands`` pipelined, one reply per
    command, an error reply as its exception (returned, not raised).

    For commands that must share a connection and may hold it a while, such as a ``WAIT``
    after the writes it covers (``WAIT`` counts only its own connection's writes), and so
    do not belong on a :class:`Line` that other callers share. Anything that cuts the round
    trip short drops the connection, since a reply may be half read.
    """
    conn = node.acquire_connection()
    replies: list[Any] = []
    try:
        await node.disconnect_if_needed(conn)
        await conn.send_packed_command(pack_commands(commands, conn.encoder))
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        node.release(conn)
    return replies
