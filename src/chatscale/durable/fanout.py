"""One wait, one read and one encoding per change of a stream, written to every SSE reader
of it that is caught up.

An SSE reader that has everything up to the tail *follows* its stream: it hands the
stream's :class:`Fanout` a synchronous writer for its connection and parks. The fan-out
waits for the stream to change (one wait, not one per reader), reads what was appended once
per reader position (normally one), and writes the encoded event to each follower's
connection in one loop: no task wakes per reader and delivery.

Only the steady state takes this path: a batch that brings the readers up to date on a
stream still open. Anything else *releases* the followers, which go on by themselves from
the position they reached, exactly as a reader that never followed: a batch bigger than a
read, the stream closing (its last events), deleted or unreadable, a connection whose write
buffer is full (its own ``send`` waits for the socket), the reader's deadline, the server's
drain. A follower is at one position at a time and is written to only by its fan-out while
it is parked, so it sees every record once and in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from chatscale.durable.errors import ProtocolError
from chatscale.durable.model import ReadResult
from chatscale.durable.offsets import Offset, next_cursor
from chatscale.durable.store import DurableStore, woken_or_timed_out
from chatscale.server.protocol import BodyWriter
from chatscale.tasks import stop_task

log = logging.getLogger("chatscale.durable")

#: The frame of a read for one cursor: (read, cursor) -> the bytes of its SSE events.
Encode = Callable[[ReadResult, str], bytes]

#: A fan-out re-reads its stream at least this often, heard of a change or not.
RECHECK_S = 15.0


class Follower:
    """One parked SSE reader: where it is, its request's cursor, its connection's writer."""

    __slots__ = ("cursor", "gone", "position", "waiter", "write")

    def __init__(
        self,
        position: Offset,
        cursor: str | None,
        write: BodyWriter,
        waiter: asyncio.Future[None],
    ) -> None:
        self.position = position
        self.cursor = cursor
        self.write = write
        self.waiter = waiter
        #: Released or left: never written to again.
        self.gone = False

    def release(self) -> bool:
        """Stop following: the reader goes on by itself from :attr:`position`. ``False``
        if it was released or had left already."""
        if self.gone:
            return False
        self.gone = True
        if not self.waiter.done():
            self.waiter.set_result(None)
        return True


#: Why a fan-out lets its followers go: more was appended than one read returns, the
#: stream closed, it could not be read (deleted, expired, a Redis error), a reader's
#: connection did not take a write, the server drains or stops.
RELEASE_REASONS = ("batch", "closed", "unreadable", "slow", "stopped")


class FanoutStats:
    """What the fan-outs of one process did, for the metrics."""

    __slots__ = ("released", "writes")

    def __init__(self) -> None:
        #: Events written to followers' connections.
        self.writes = 0
        #: Followers released, by reason (:data:`RELEASE_REASONS`).
        self.released = dict.fromkeys(RELEASE_REASONS, 0)


class _Group:
    """The followers at one position, and the ``seen`` of the read that put them there."""

    __slots__ = ("followers", "seen")

    def __init__(self, seen: int | None) -> None:
        self.seen = seen
        self.followers: dict[Follower, None] = {}


class Fanout:
    """The followers of one stream and the task that writes to them."""

    def __init__(
        self,
        store: DurableStore,
        name: str,
        max_bytes: int,
        encode: Encode,
        on_idle: Callable[[Fanout], None],
        stats: FanoutStats | None = None,
    ) -> None:
        self.store = store
        self.stats = stats or FanoutStats()
        self.name = name
        self.max_bytes = max_bytes
        self.encode = encode
        self.on_idle = on_idle
        self._groups: dict[Offset, _Group] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        #: The group whose read is under way (out of ``_groups`` meanwhile).
        self._reading: _Group | None = None

    @property
    def count(self) -> int:
        """How many readers follow the stream now."""
        return self._count

    async def follow(
        self,
        position: Offset,
        seen: int | None,
        cursor: str | None,
        write: BodyWriter,
        timeout_s: float,
    ) -> Offset:
        """Follow from ``position`` (the end of a read that reached the tail, whose ``seen``
        is ``seen``) for at most ``timeout_s``; the position reached once released."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        follower = Follower(position, cursor, write, waiter)
        self._join(follower, seen)
        try:
            await woken_or_timed_out(waiter, timeout_s)
        finally:
            self._leave(follower)
        return follower.position

    def release_all(self, reason: str = "stopped") -> None:
        """Release every follower (the server drains), those of a read under way too."""
        groups = list(self._groups.values())
        if self._reading is not None:
            groups.append(self._reading)
        for group in groups:
            for follower in group.followers:
                self._release(follower, reason)
        self._groups.clear()

    def _release(self, follower: Follower, reason: str) -> None:
        if follower.release():
            self.stats.released[reason] += 1

    async def stop(self) -> None:
        """Release every follower and end the task (the server stops)."""
        self.release_all()
        await stop_task(self._task)

    def _join(self, follower: Follower, seen: int | None) -> None:
        self._group(follower.position, seen).followers[follower] = None
        self._count += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"durable fan-out {self.name}")

    def _leave(self, follower: Follower) -> None:
        self._count -= 1
        if not follower.gone:
            follower.gone = True
            group = self._groups.get(follower.position)
            if group is not None:
                group.followers.pop(follower, None)
                if not group.followers:
                    del self._groups[follower.position]

    async def _run(self) -> None:
        try:
            while self._count:
                if self._groups:
                    lowest = min(self._groups)
                    await self.store.wait(self.name, lowest, RECHECK_S, self._groups[lowest].seen)
                for position in sorted(self._groups):
                    group = self._groups.pop(position, None)
                    if group is None or not group.followers:
                        continue
                    self._reading = group
                    try:
                        result = await self.store.read(self.name, position, self.max_bytes)
                    except ProtocolError:
                        result = None  # deleted: each reader finds out by itself
                    finally:
                        self._reading = None
                    self._deliver(position, group, result)
                if not self._groups and self._count:
                    # Every follower is being released or leaving: let them.
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning(
                "fan-out of stream %s failed; its readers go on alone", self.name, exc_info=True
            )
            self.release_all("unreadable")
        finally:
            self._task = None
            self.release_all()
            self.on_idle(self)

    def _deliver(self, position: Offset, group: _Group, result: ReadResult | None) -> None:
        """Write ``result`` to ``group``'s followers and move them to its end, or release
        them when it is not a batch that leaves them up to date on an open stream."""
        if result is not None and not result.records and not result.info.closed:
            self._regroup(position, group.followers, result.seen)  # nothing new
            return
        if result is None or result.info.closed or not result.up_to_date:
            reason = "unreadable" if result is None else "closed" if result.info.closed else "batch"
            for follower in group.followers:
                self._release(follower, reason)
            return
        frames: dict[str | None, bytes] = {}
        moved: dict[Follower, None] = {}
        end = result.end
        for follower in group.followers:
            if follower.gone:
                continue
            frame = frames.get(follower.cursor)
            if frame is None:
                frame = frames[follower.cursor] = self.encode(result, next_cursor(follower.cursor))
            if follower.write(frame):
                follower.position = end
                moved[follower] = None
            else:
                self._release(follower, "slow")
        self.stats.writes += len(moved)
        if moved:
            self._regroup(end, moved, result.seen)

    def _regroup(self, position: Offset, followers: dict[Follower, None], seen: int | None) -> None:
        live = {f: None for f in followers if not f.gone}
        if live:
            self._group(position, seen).followers.update(live)

    def _group(self, position: Offset, seen: int | None) -> _Group:
        """The group at ``position``, made for followers whose read had ``seen``."""
        group = self._groups.get(position)
        if group is None:
            group = self._groups[position] = _Group(seen)
        elif group.seen != seen:
            group.seen = None  # reads at different moments: let the store check
        return group
