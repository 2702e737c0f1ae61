"""Group commit: the Lua script calls and commands of concurrent callers share round trips
on one held connection.

The Durable Streams store on Redis makes one script call per request, and through the
client each took a pool checkout and release, a retry wrapper and a task per socket write:
more of the server's CPU than the rest of the request (docs/benchmarks.md, Durable Streams).
A burst of stream subscribers (a redeploy's reconnections) reads a job hash and a log each,
and through the client those reads checked out, and first opened, a pool connection apiece.
:class:`SharedCalls` sends every call on a :class:`~chatscale.redis.line.Line`. One round
trip is in flight at a time; the calls made while it is pass go together in the next, so a
busy server sends many calls per round trip and an idle one waits for nothing: no window,
no timer. Each call still runs as its own script or command, in the order the calls were
made.

On Cluster the calls of a round trip are grouped by the node their slot is on, one line per
node, the nodes' round trips at once. A call a node does not take (its slot moved,
``MOVED``/``ASK``, the cluster is down) or whose node's round trip failed goes once more
through the cluster client, which follows the new layout and retries as it always does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from chatscale.redis.line import Line


class Script(Protocol):
    """A Lua script by its SHA1 and its source, which runs itself through a client
    (:class:`chatscale.streams.scripts.LuaScript`)."""

    sha: str
    source: str

    async def __call__(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any: ...


class _Call:
    """One caller's script call (``script`` set) or command (``script`` is ``None``; the
    command is ``args``), the key its slot is routed by, and the caller's future."""

    __slots__ = ("args", "future", "key", "keys", "script")

    def __init__(
        self,
        script: Script | None,
        keys: Sequence[Any],
        args: Sequence[Any],
        future: asyncio.Future[Any],
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future = future
        self.key = keys[0]

    def command(self) -> Sequence[Any]:
        """What goes on the wire."""
        script = self.script
        if script is None:
            return self.args
        return ("EVALSHA", script.sha, len(self.keys), *self.keys, *self.args)

    async def through(self, client: Any) -> Any:
        """The call made through ``client`` (which applies its reply callbacks)."""
        if self.script is None:
            return await client.execute_command(*self.args)
        return await self.script(client, self.keys, self.args)


#: Error replies of a Cluster node that does not serve the call's slot (now).
_ELSEWHERE = (MovedError, AskError, TryAgainError, ClusterDownError)


class _NodePool:
    """A Cluster node's connections as the pool a :class:`Line` holds one of."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node

    async def get_connection(self) -> Any:
        return self._node.acquire_connection()

    async def release(self, connection: Any) -> None:
        self._node.release(connection)


class SharedCalls:
    """Runs the script calls and commands of many callers on one connection of ``client``'s
    pool, in shared round trips, each bounded by ``timeout_s``.

    A call's reply is its result; an error reply is raised to its caller alone. A command's
    reply is Redis's own as hiredis parses it (``HGETALL``: a map under RESP3, a flat list
    of fields and values under RESP2) from a round trip, but shaped by the client's reply
    callbacks when it went through the client (on Cluster, after a ``MOVED``): callers
    accept both. A round trip that fails fails every call in it (``ConnectionError``,
    ``TimeoutError``): as through the client, such a call may or may not have run.
    ``scripts`` are loaded by each connection as it opens, in its first round trip; a
    script Redis does not know all the same (one not named there, a ``SCRIPT FLUSH``) is
    loaded and its calls sent again: they had not run.
    """

    def __init__(self, client: Any, timeout_s: float, scripts: Sequence[Script] = ()) -> None:
        self._client = client
        #: Loaded by every connection a line opens (see :class:`Line`).
        self._sources = tuple(script.source for script in scripts)
        self._line = (
            None
            if isinstance(client, RedisCluster)
            else Line(client.connection_pool, self._sources)
        )
        #: On Cluster: a line per node, by the node's name.
        self._lines: dict[str, Line] = {}
        self._timeout_s = timeout_s
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    async def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` on ``keys`` with ``args``; its reply."""
        return await self._queued(script, keys, args)

    async def command(self, *args: Any, key: Any) -> Any:
        """Run the command ``args`` (its name first), whose slot is ``key``'s; its reply."""
        return await self._queued(None, (key,), args)

    def _queued(
        self, script: Script | None, keys: Sequence[Any], args: Sequence[Any]
    ) -> asyncio.Future[Any]:
        if self._closed:
            raise RedisConnectionError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Call(script, keys, args, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        return future

    async def close(self) -> None:
        """Stop sending (calls waiting fail) and give the connection back."""
        self._closed = True
        sender = self._sender
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        self._fail(self._queue, RedisConnectionError("the store is closed"))
        self._queue = []
        if self._line is not None:
            await self._line.close()
        for line in self._lines.values():
            await line.close()
        self._lines.clear()

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
        if self._line is None:
            await self._send_by_node(calls)
            return
        # A READONLY reply (a failover) made the line drop its connection: the next round
        # trip finds the master of the moment.
        replies = await self._round_trip(self._line, calls)
        for call, reply in zip(calls, replies, strict=True):
            _settle(call, reply)

    async def _round_trip(self, line: Line, calls: list[_Call]) -> list[Any]:
        """One reply per call, over ``line``; the calls of scripts Redis did not know are
        sent again once it has them."""
        commands = [call.command() for call in calls]
        async with asyncio.timeout(self._timeout_s):
            replies = await line.round_trip(commands)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            for source in {s.source for i in unknown if (s := calls[i].script) is not None}:
                await self._client.script_load(source)
            async with asyncio.timeout(self._timeout_s):
                again = await line.round_trip([commands[i] for i in unknown])
            for i, reply in zip(unknown, again, strict=True):
                replies[i] = reply
        return replies

    async def _send_by_node(self, calls: list[_Call]) -> None:
        groups: dict[str, tuple[ClusterNode, list[_Call]]] = {}
        elsewhere: list[_Call] = []
        for call in calls:
            try:
                node = self._client.get_node_from_key(call.key)
            except Exception:  # no node known for the slot (the layout is being learnt)
                node = None
            if node is None:
                elsewhere.append(call)
            else:
                groups.setdefault(node.name, (node, []))[1].append(call)
        outcomes = await asyncio.gather(
            *(self._send_to(node, group) for node, group in groups.values())
        )
        for left in outcomes:
            elsewhere += left
        if elsewhere:
            await asyncio.gather(*(self._through_client(call) for call in elsewhere))

    async def _send_to(self, node: ClusterNode, calls: list[_Call]) -> list[_Call]:
        """Send ``calls`` on ``node``'s line; the calls left for the client."""
        line = self._lines.get(node.name)
        if line is None:
            line = self._lines[node.name] = Line(_NodePool(node), self._sources)
        try:
            replies = await self._round_trip(line, calls)
        except (RedisConnectionError, OSError, TimeoutError):
            await line.reset()
            del self._lines[node.name]
            return calls
        # A slot that moved leaves the connection sound: only the client's map was old.
        left: list[_Call] = []
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, _ELSEWHERE):
                left.append(call)
            else:
                _settle(call, reply)
        return left

    async def _through_client(self, call: _Call) -> None:
        if call.future.done():
            return
        try:
            reply = await call.through(self._client)
        except Exception as exc:
            reply = exc
        _settle(call, reply)

    @staticmethod
    def _fail(calls: list[_Call], exc: BaseException) -> None:
        for call in calls:
            _settle(call, exc)


def _settle(call: _Call, reply: Any) -> None:
    """Give ``call``'s caller its reply (an exception is raised to it), unless it left."""
    future = call.future
    if future.done():
        return
    if isinstance(reply, BaseException):
        future.set_exception(reply)
    else:
        future.set_result(reply)
