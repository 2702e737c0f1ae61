"""Group commit of Lua script calls: the calls of concurrent callers share round trips on one
held connection.

The Durable Streams store on Redis makes one script call per request, and through the
client each took a pool checkout and release, a retry wrapper and a task per socket write:
more of the server's CPU than the rest of the request (docs/benchmarks.md, Durable Streams).
:class:`ScriptCalls` sends every call on a :class:`~chatscale.redis.line.Line`. One round
trip is in flight at a time; the calls made while it is pass go together in the next, so a
busy server sends many calls per round trip and an idle one waits for nothing: no window,
no timer. Each call still runs as its own script, in the order the calls were made.
Standalone and Sentinel only: on Cluster each call goes to its slot's node through the
client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError

from chatscale.redis.line import Line


class Script(Protocol):
    """A Lua script by its SHA1 and its source (:class:`chatscale.streams.scripts.LuaScript`)."""

    sha: str
    source: str


_Call = tuple[Script, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptCalls:
    """Runs script calls of many callers on one connection of ``client``'s pool, in shared
    round trips, each bounded by ``timeout_s``.

    A call's reply is its result; an error reply is raised to its caller alone. A round trip
    that fails fails every call in it (``ConnectionError``, ``TimeoutError``): as through the
    client, such a call may or may not have run. A script Redis does not know (first use, a
    restart, a failover) is loaded and its calls sent again: they had not run.
    """

    def __init__(self, client: Any, timeout_s: float) -> None:
        self._client = client
        self._line = Line(client.connection_pool)
        self._timeout_s = timeout_s
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    async def __call__(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` on ``keys`` with ``args``; its reply."""
        if self._closed:
            raise RedisConnectionError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        return await future

    async def close(self) -> None:
        """Stop sending (calls waiting fail) and give the connection back."""
        self._closed = True
        sender = self._sender
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        self._fail(self._queue, RedisConnectionError("the store is closed"))
        self._queue = []
        await self._line.close()

    async def _send_all(self) -> None:
        try:
            while self._queue:
                calls, self._queue = self._queue, []
                try:
                    await self._send(calls)
                except asyncio.CancelledError:
                    self._fail(calls, RedisConnectionError("the store is closed"))
                    raise
                except Exception as exc:
                    self._fail(calls, exc)
        finally:
            self._sender = None

    async def _send(self, calls: list[_Call]) -> None:
        commands = [("EVALSHA", s.sha, len(keys), *keys, *args) for s, keys, args, _ in calls]
        async with asyncio.timeout(self._timeout_s):
            replies = await self._line.round_trip(commands)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            for source in {calls[i][0].source for i in unknown}:
                await self._client.script_load(source)
            async with asyncio.timeout(self._timeout_s):
                again = await self._line.round_trip([commands[i] for i in unknown])
            for i, reply in zip(unknown, again, strict=True):
                replies[i] = reply
        if any(isinstance(reply, ReadOnlyError) for reply in replies):
            # The connection's node is a replica now (a failover): the next round trip
            # connects to the master of the moment.
            await self._line.reset()
        for (_, _, _, future), reply in zip(calls, replies, strict=True):
            if future.done():
                continue  # its caller left
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    @staticmethod
    def _fail(calls: list[_Call], exc: BaseException) -> None:
        for *_, future in calls:
            if not future.done():
                future.set_exception(exc)
