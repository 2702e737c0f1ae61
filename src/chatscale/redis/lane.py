"""A dedicated connection for one hot loop: the stream writer or a blocking log reader.

redis-py spends most of a round trip's CPU in its generic command path: taking and
returning a pool connection, the retry wrapper, and, when a socket timeout is configured,
one ``asyncio.wait_for`` task per send plus a timer per read. On a loop that sends one
command at a time, forever, a connection held for the loop and one deadline per round trip
cost about a third of that (``bench/streams.py``; the figures are in docs/benchmarks.md).

A lane takes one connection from the client's own pool (same address, TLS, credentials and
Sentinel master discovery) and keeps it. Any failure (timeout, cancellation, a connection
or server error) drops the connection, so a half-read reply can never be mistaken for the
next one; the next call takes a fresh one, which is how a Sentinel failover is followed.
Cluster clients have no single pool: use the client itself there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

#: A connection idle longer than this may have been closed by the server or a proxy; a
#: connection error on it is retried once on a fresh connection.
_STALE_S = 1.0


class Lane:
    """One command at a time on one held connection (not safe for concurrent callers)."""

    def __init__(self, client: Redis, timeout_s: float) -> None:
        self._pool = client.connection_pool
        self._timeout_s = timeout_s
        self._conn: Any = None
        self._saved_timeout: float | None = None
        self._used = 0.0
        self._busy = False
        self.closed = False

    @property
    def busy(self) -> bool:
        """Whether a command is in flight (a second caller should use the client)."""
        return self._busy

    async def execute(self, *args: Any, extra_timeout_s: float = 0.0) -> Any:
        """Send one command and return its raw reply (no response callbacks applied).

        ``extra_timeout_s`` lengthens the deadline for a command that blocks on the server
        (``XREAD BLOCK``).
        """
        if self._busy:
            raise RuntimeError("a Lane serves one caller at a time")
        self._busy = True
        try:
            fresh = self._conn is None
            stale = not fresh and time.monotonic() - self._used > _STALE_S
            try:
                return await self._round_trip(args, extra_timeout_s)
            except RedisConnectionError:
                if fresh or not stale:
                    raise
                return await self._round_trip(args, extra_timeout_s)
        finally:
            self._busy = False

    async def _round_trip(self, args: tuple[Any, ...], extra_timeout_s: float) -> Any:
        if self.closed:
            raise RedisConnectionError("the lane is closed")
        conn = self._conn
        try:
            if conn is None:
                conn = await self._take()
            async with asyncio.timeout(self._timeout_s + extra_timeout_s):
                await conn.send_packed_command(conn.pack_command(*args), check_health=False)
                reply = await conn.read_response()
        except BaseException:
            await self._drop()
            raise
        self._used = time.monotonic()
        return reply

    async def _take(self) -> Any:
        conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        # The deadline is ours (one timer per round trip); redis-py's own would wrap every
        # send in a task. Restored before the connection goes back to the pool.
        self._saved_timeout = conn.socket_timeout
        conn.socket_timeout = None
        self._conn = conn
        return conn

    async def _drop(self, *, disconnect: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.socket_timeout = self._saved_timeout
        try:
            if disconnect:
                await conn.disconnect(nowait=True)
        finally:
            await self._pool.release(conn)

    async def close(self) -> None:
        """Give the connection back to the pool (idempotent)."""
        self.closed = True
        await self._drop(disconnect=False)
