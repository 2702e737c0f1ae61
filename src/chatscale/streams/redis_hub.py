"""One pub/sub connection per Redis node per process, fanned out to local listeners.

A job's events are published on its own channel by the script that stores them
(``append.lua``), so a process receives only the events of the jobs its own clients follow:
its read work grows with what its clients receive, not with the size of the fleet. However
many subscribers a process has, it holds one connection per Redis node it listens on (one
outside Cluster; on Cluster the channels are sharded, each on its job's node).

Pub/sub delivers at most once. What the hub promises instead is that a listener learns when
it may have missed something: every reconnect (and a Cluster node telling a channel to
leave) marks the channel's listeners ``lost``, and they re-read the log once the channel is
subscribed again. A channel is only reported ready after Redis confirmed the subscription,
so a listener that reads the log after :meth:`Hub.join` returns misses nothing in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from chatscale.failures import FailureLog
from chatscale.redis.replies import MORE, Replies
from chatscale.streams import codec
from chatscale.tasks import Background, stop_task

log = logging.getLogger(__name__)

#: A published batch: ``[epoch, first seq, items]``.
Record = list[Any]
ControlHandler = Callable[[bytes], Awaitable[None]]

_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0
#: How long :meth:`Hub.join` waits for Redis to confirm a subscription before the listener
#: goes on without it (it then relies on its quiet checks, and is told when it arrives).
_CONFIRM_WAIT_S = 2.0
#: Channels per SUBSCRIBE / UNSUBSCRIBE command.
_CHUNK = 256


class Listener:
    """The queue of one subscriber of one job's channel."""

    __slots__ = (
        "behind",
        "job_id",
        "limit",
        "lost",
        "overflowed",
        "patience",
        "pushed",
        "queue",
        "queued",
        "quiet",
        "seen",
        "stale",
        "waiter",
    )

    def __init__(self, job_id: str, limit: int, patience: int = 1) -> None:
        self.job_id = job_id
        self.limit = limit
        #: Idle checks without a record before the listener goes stale, and how many have
        #: passed.
        self.patience = patience
        self.quiet = 0
        self.queue: deque[Record] = deque()
        self.queued = 0
        self.overflowed = False
        #: Set when the channel's connection dropped: messages may have been missed.
        self.lost = False
        #: Set while the listener goes on without a confirmed subscription (it relies on
        #: the log); the confirmation, when it comes, sets ``lost`` so that it reads again.
        self.behind = False
        #: Records pushed so far, and the count at the hub's previous idle check.
        self.pushed = 0
        self.seen = 0
        #: Set (and the waiter woken) when nothing arrived for ``patience`` idle checks:
        #: the subscriber re-reads the job (it may have ended while a message was lost).
        self.stale = False
        self.waiter: asyncio.Future[None] | None = None

    def push(self, record: Record) -> None:
        """Queue a record (or flag an overflow and drop what is queued)."""
        if self.overflowed:
            return
        self.pushed += 1
        size = len(record[2])
        if self.queued + size > self.limit:
            self.overflowed = True
            self.queue.clear()
            self.queued = 0
        else:
            self.queue.append(record)
            self.queued += size
        self.wake()

    def wake(self) -> None:
        """Wake the subscriber if it waits."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Until something is pushed, an overflow, a loss, or the listener goes stale."""
        if self.queue or self.overflowed or self.stale or self.lost:
            return
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            if self.waiter is waiter:
                self.waiter = None

    def pop(self) -> Record | None:
        """The next queued record, if any."""
        if not self.queue:
            return None
        record = self.queue.popleft()
        self.queued -= len(record[2])
        return record

    def reset(self) -> None:
        """Forget the queue and every flag: the subscriber is about to re-read the log."""
        self.queue.clear()
        self.queued = 0
        self.overflowed = self.lost = self.stale = False
        self.quiet = 0


class _Link:
    """One pub/sub connection (to the only node, or to one Cluster node) and its reader."""

    def __init__(self, hub: Hub, name: str, opener: Callable[[], Awaitable[Any]]) -> None:
        self.hub = hub
        self.name = name
        self._failures = FailureLog(log, f"pub/sub connection {name}")
        self._opener = opener
        self.conn: Any = None
        #: Channels this link should be subscribed to, and those Redis confirmed.
        self.wanted: set[str] = set()
        self.confirmed: set[str] = set()
        self._unconfirmed: dict[str, int] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        #: Liveness of the connection being read (see :meth:`check`): when it last brought
        #: anything, when the pending ping went out, and why it was given up.
        self._reading: Any = None
        self._heard = 0.0
        self._ping_at: float | None = None
        self._abandoned: Exception | None = None
        self._outbox: deque[tuple[str, str]] = deque()
        self._sender: asyncio.Task[None] | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    # --- subscriptions ------------------------------------------------------------------
    def ready(self, channel: str) -> asyncio.Future[None]:
        """A future done once Redis confirmed the subscription of ``channel``."""
        future = self._ready.get(channel)
        if future is None or (future.done() and channel not in self.confirmed):
            future = self._ready[channel] = asyncio.get_running_loop().create_future()
            if channel in self.confirmed:
                future.set_result(None)
        return future

    def add(self, channel: str) -> None:
        """Subscribe ``channel`` (confirmed later: see :meth:`ready`)."""
        self.wanted.add(channel)
        if self.conn is not None:
            self._enqueue(self.hub.subscribe_cmd, channel)

    def discard(self, channel: str) -> None:
        """Unsubscribe ``channel``."""
        self.wanted.discard(channel)
        self.confirmed.discard(channel)
        self._ready.pop(channel, None)
        if self.conn is not None:
            self._enqueue(self.hub.unsubscribe_cmd, channel)

    def _enqueue(self, command: str, channel: str) -> None:
        # Commands go out in the order they were asked for (a subscribe right after an
        # unsubscribe of the same channel must reach Redis after it), from one task.
        if command == self.hub.subscribe_cmd:
            self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
        self._outbox.append((command, channel))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        conn = self.conn
        while self._outbox and conn is not None and conn is self.conn:
            command, channel = self._outbox.popleft()
            batch = [channel] if channel else []
            # On Cluster one SSUBSCRIBE / SUNSUBSCRIBE may only name channels of one slot
            # (else CROSSSLOT, and the connection would be dropped over and over).
            slot = key_slot(channel.encode()) if self.hub.sharded and channel else None
            while (
                batch
                and self._outbox
                and self._outbox[0][0] == command
                and len(batch) < _CHUNK
                and (slot is None or key_slot(self._outbox[0][1].encode()) == slot)
            ):
                batch.append(self._outbox.popleft()[1])
            try:
                async with asyncio.timeout(self.hub.probe_s):
                    await conn.send_command(command, *batch, check_health=False)
            except Exception as exc:
                # A send that fails or hangs (a black-holed connection never drains) gives
                # the connection up; the reading task then reconnects.
                log.debug("pub/sub send on %s failed: %s", self.name, exc)
                self._abandon(conn, exc)
                return

    # --- liveness -----------------------------------------------------------------------
    def check(self, now: float) -> None:
        """Called every quarter of ``probe_s``: a connection silent for ``probe_s`` is sent
        a ``PING``; one that still brought nothing ``probe_s`` later is given up (a
        black-holed connection would otherwise leave every listener waiting for nothing).
        Checking from outside keeps the reads free of a timeout each."""
        conn = self._reading
        if conn is None or conn is not self.conn:
            return
        if self._ping_at is not None:
            if now - self._ping_at >= self.hub.probe_s:
                self._abandon(
                    conn, ConnectionError("no answer to a ping on the pub/sub connection")
                )
        elif now - self._heard >= self.hub.probe_s:
            self._ping_at = now
            self._enqueue("PING", "")

    def reconnect(self) -> None:
        """Give the current connection up (the link connects again)."""
        self._abandon(self._reading, ConnectionError("pub/sub connection dropped to reconnect"))

    def _abandon(self, conn: Any, exc: Exception) -> None:
        """Give ``conn`` up: its reading task stops waiting on it and reconnects."""
        if conn is None or conn is not self._reading or self._abandoned is not None:
            return
        # Cancelling the read (as asyncio.timeout does) works whatever state the socket is
        # in: closing a transport whose send buffer never drains does not end a read.
        self._abandoned = exc
        self.task.cancel()

    # --- the reading task ---------------------------------------------------------------
    async def _run(self) -> None:
        delay = _RETRY_FIRST_S
        while not self.hub.closed:
            try:
                try:
                    conn = self.conn = await self._opener()
                    self._failures.succeeded()
                    self._unconfirmed.clear()
                    self._outbox.clear()
                    for channel in sorted(self.wanted):
                        self._enqueue(self.hub.subscribe_cmd, channel)
                    delay = _RETRY_FIRST_S
                    await self._read(conn)
                except asyncio.CancelledError:
                    abandoned, self._abandoned = self._abandoned, None
                    task = self.task
                    if abandoned is None or self.hub.closed or task.uncancel() > 0:
                        raise
                    raise abandoned from None
                finally:
                    self._reading = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.hub.closed:
                    self._failures.failed(exc)
            await self._drop()
            if self.hub.closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
            if await self.hub.reroute(self):
                return  # a Cluster node that no longer serves these channels

    async def _read(self, conn: Any) -> None:
        """Handle every reply of ``conn`` until it fails (or is given up)."""
        replies = Replies(conn)
        clock = asyncio.get_running_loop().time
        self._abandoned = None
        self._ping_at = None
        self._heard = clock()
        self._reading = conn
        handle = self._handle
        while True:
            reply = replies.next()
            if reply is MORE:
                await replies.fill()
                self._heard = clock()
                self._ping_at = None
            elif isinstance(reply, Exception):
                raise reply
            else:
                handle(reply)

    def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind = reply[0]
        if kind in (b"message", b"smessage"):
            self.hub.dispatch(reply[1].decode(), reply[2])
            return
        channel = reply[1].decode() if isinstance(reply[1], bytes) else ""
        if kind in (b"subscribe", b"ssubscribe"):
            left = self._unconfirmed.get(channel, 1) - 1
            if left > 0:
                self._unconfirmed[channel] = left
                return
            self._unconfirmed.pop(channel, None)
            if channel in self.wanted:
                self.confirmed.add(channel)
                future = self._ready.get(channel)
                if future is not None and not future.done():
                    future.set_result(None)
                self.hub.confirmed(channel)
        elif (
            kind in (b"unsubscribe", b"sunsubscribe")
            and channel in self.wanted
            and not self._unconfirmed.get(channel)
        ):
            # Redis dropped a wanted channel (its Cluster slot moved): listeners may
            # miss messages until it is subscribed again, wherever it lives now.
            self.confirmed.discard(channel)
            self.hub.lost(channel)
            self.hub.move(self, channel)

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        lost = list(self.confirmed | set(self._unconfirmed))
        self.confirmed.clear()
        self._unconfirmed.clear()
        # Waiters of a confirmation still pending keep waiting for the next connection's.
        self._ready = {c: f for c, f in self._ready.items() if not f.done()}
        for channel in lost:
            self.hub.lost(channel)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


class Hub:
    """Channels of this process's listeners, each subscribed once, fanned out locally."""

    def __init__(self, client: Any, *, probe_s: float, idle_s: float) -> None:
        self.client = client
        self.sharded = isinstance(client, RedisCluster)
        self.subscribe_cmd = "SSUBSCRIBE" if self.sharded else "SUBSCRIBE"
        self.unsubscribe_cmd = "SUNSUBSCRIBE" if self.sharded else "UNSUBSCRIBE"
        #: The command append.lua publishes with (sharded on Cluster: the message stays on
        #: the job's shard instead of crossing the whole cluster bus).
        self.publish_cmd = "SPUBLISH" if self.sharded else "PUBLISH"
        self.probe_s = probe_s
        self.idle_s = idle_s
        self.closed = False
        self.listeners: dict[str, set[Listener]] = {}
        self.handlers: dict[str, ControlHandler] = {}
        self._links: dict[str, _Link] = {}
        self._route: dict[str, _Link] = {}
        self._background = Background("pub/sub hub")
        self._ticker: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # --- listeners ----------------------------------------------------------------------
    async def join(self, channel: str, listener: Listener) -> None:
        """Add ``listener`` to ``channel``; returns once the subscription is confirmed (or
        after a short wait without it: the listener is then marked ``lost`` and told)."""
        subs = self.listeners.get(channel)
        if subs is None:
            subs = self.listeners[channel] = set()
        subs.add(listener)
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        await self._await_ready(channel, listener)

    async def _await_ready(self, channel: str, listener: Listener) -> None:
        link = self._link_of(channel)
        ready = link.ready(channel)
        if channel not in link.wanted:
            link.add(channel)
        if ready.done():
            return
        if link.conn is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CONFIRM_WAIT_S):
                    await asyncio.shield(ready)
            if ready.done():
                return
        # No confirmation (the connection is down or slow): the subscriber goes on with
        # the log alone and is woken to read it again once the channel is confirmed.
        listener.behind = True

    async def rejoin(self, channel: str, listener: Listener) -> None:
        """After a loss: wait (briefly) until ``channel`` is subscribed again."""
        listener.lost = False
        await self._await_ready(channel, listener)

    def leave(self, channel: str, listener: Listener) -> None:
        """Remove ``listener``; the channel is unsubscribed with its last listener."""
        subs = self.listeners.get(channel)
        if subs is None:
            return
        subs.discard(listener)
        if not subs and channel not in self.handlers:
            del self.listeners[channel]
            link = self._route.pop(channel, None)
            if link is not None and not self.closed:
                link.discard(channel)

    async def handle(self, channel: str, handler: ControlHandler) -> None:
        """Call ``handler`` with every message of ``channel`` (this instance's control)."""
        self.handlers[channel] = handler
        link = self._link_of(channel)
        ready = link.ready(channel)
        link.add(channel)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CONFIRM_WAIT_S):
                await asyncio.shield(ready)

    # --- messages -----------------------------------------------------------------------
    def dispatch(self, channel: str, data: bytes) -> None:
        """A message arrived on ``channel``."""
        handler = self.handlers.get(channel)
        if handler is not None:
            self.spawn(handler(data))
            return
        subs = self.listeners.get(channel)
        if not subs:
            return
        try:
            record = codec.loads(data)
        except ValueError:
            log.warning("unreadable message on %s; its listeners re-read the log", channel)
            self.lost(channel)
            return
        for listener in subs:
            listener.push(record)

    def confirmed(self, channel: str) -> None:
        """``channel`` is subscribed (again): listeners that went on without it read the
        log once more, to cover what was published before."""
        for listener in self.listeners.get(channel, ()):
            if listener.behind:
                listener.behind = False
                listener.lost = True
                listener.wake()

    def lost(self, channel: str) -> None:
        """Messages of ``channel`` may have been missed: its listeners re-read the log."""
        for listener in self.listeners.get(channel, ()):
            listener.lost = True
            listener.wake()

    async def _tick(self) -> None:
        """Wake listeners that received nothing for a while, so they re-read their job (it
        may have ended while its last message was lost)."""
        while not self.closed:
            await asyncio.sleep(self.idle_s / 2)
            for subs in self.listeners.values():
                for sub in subs:
                    if sub.pushed == sub.seen and not sub.queue:
                        sub.quiet += 1
                        if sub.quiet >= sub.patience:
                            sub.stale = True
                            sub.wake()
                    else:
                        sub.quiet = 0
                    sub.seen = sub.pushed

    async def _watch(self) -> None:
        """Probe the connections that went silent (see :meth:`_Link.check`)."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(self.probe_s / 4)
            now = loop.time()
            for link in list(self._links.values()):
                link.check(now)

    # --- connections --------------------------------------------------------------------
    def _link_of(self, channel: str) -> _Link:
        link = self._route.get(channel)
        if link is not None:
            return link
        name, opener = self._node_of(channel)
        link = self._links.get(name)
        if link is None or link.task.done():
            link = self._links[name] = _Link(self, name, opener)
            if self._watchdog is None:
                self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        self._route[channel] = link
        return link

    def _node_of(self, channel: str) -> tuple[str, Callable[[], Awaitable[Any]]]:
        if not self.sharded:
            return "redis", self._open_pooled
        node = self.client.get_node_from_key(channel)

        async def open_node() -> Any:
            conn = node.connection_class(**node.connection_kwargs)
            conn.socket_timeout = None  # reads block; the link probes silence itself
            await conn.connect()
            return conn

        return node.name, open_node

    async def _open_pooled(self) -> Any:
        # A connection of its own, made by the client's pool: same address, TLS,
        # credentials and (on Sentinel) the current master.
        conn = self.client.connection_pool.make_connection()
        conn.socket_timeout = None  # reads block; the link probes silence itself
        await conn.connect()
        return conn

    async def reroute(self, link: _Link) -> bool:
        """After ``link`` failed: on Cluster, move its channels to the nodes that serve them
        now. Whether the link is finished (all its channels moved elsewhere)."""
        if not self.sharded:
            return False
        with contextlib.suppress(Exception):
            await self.client.nodes_manager.initialize()
        moved = False
        for channel in list(link.wanted):
            name, _ = self._node_of(channel)
            if name != link.name:
                self.move(link, channel)
                moved = True
        if moved and not link.wanted:
            if self._links.get(link.name) is link:
                del self._links[link.name]
            return True
        return False

    def move(self, link: _Link, channel: str) -> None:
        """Subscribe ``channel`` on the node that serves it now."""
        link.discard(channel)
        if self._route.get(channel) is link:
            del self._route[channel]
        if channel in self.listeners or channel in self.handlers:
            self._link_of(channel).add(channel)

    def reconnect(self) -> None:
        """Drop every pub/sub connection (they reconnect to the current master, and their
        listeners re-read the log)."""
        for link in self._links.values():
            link.reconnect()

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background (its failure is logged)."""
        self._background.spawn(coro)

    async def close(self) -> None:
        """Close every connection and end every listener's wait."""
        self.closed = True
        await stop_task(self._ticker)
        await stop_task(self._watchdog)
        for link in list(self._links.values()):
            await stop_task(link.task)
            await stop_task(link._sender)
            await link._drop()
        await self._background.close()
        for subs in self.listeners.values():
            for listener in subs:
                listener.wake()
