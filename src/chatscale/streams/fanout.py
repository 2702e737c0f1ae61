"""One reader per followed instance log per process, fanning entries out to subscribers.

However many subscribers a process has, it runs one blocking ``XREAD`` per instance log
they need (an instance log carries the live events of every job of one producing
instance), never one per subscriber. Each subscriber gets a bounded queue; one that falls
behind by more than STREAM_SUBSCRIBER_BUFFER events is told to re-read from the log instead
of buffering without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from chatscale.redis.lane import Lane
from chatscale.streams import codec
from chatscale.streams.metrics import StreamMetrics
from chatscale.streams.tasks import stop_task

log = logging.getLogger(__name__)

#: A record of an instance log: ``[job id, epoch, first seq, items]``; ``first seq == -1``
#: marks a takeover ("job moved", ``items`` = the new instance).
Record = list[Any]
ControlHandler = Callable[[str, dict[bytes, bytes]], Awaitable[None]]

_IDLE_EXIT_S = 2.0
_MOVE = b",-1,"
_RETRY_S = 0.2


class Subscription:
    """The queue of one subscriber of one job."""

    __slots__ = (
        "job_id",
        "limit",
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
        #: Idle checks without a record before the subscription goes stale, and how many
        #: have passed.
        self.patience = patience
        self.quiet = 0
        self.queue: deque[Record] = deque()
        self.queued = 0
        self.overflowed = False
        #: Records pushed so far, and the count at the reader's previous idle check.
        self.pushed = 0
        self.seen = 0
        #: Set (and the waiter woken) when nothing arrived for a whole idle check: re-read
        #: the job.
        self.stale = False
        #: The subscriber's pending :meth:`wait` (a bare future: cheaper than an
        #: ``asyncio.Event``, and a subscriber wakes once per record).
        self.waiter: asyncio.Future[None] | None = None

    def push(self, record: Record) -> None:
        """Queue a record (or flag an overflow and drop what is queued)."""
        if self.overflowed:
            return
        self.pushed += 1
        size = len(record[3]) if record[2] >= 0 else 1
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
        """Until something is pushed, an overflow, or the subscription goes stale."""
        if self.queue or self.overflowed or self.stale:
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
        self.queued -= len(record[3]) if record[2] >= 0 else 1
        return record


class LogReader:
    """Follows one instance log (and, for this instance, its control stream)."""

    def __init__(
        self,
        client: Any,
        key: str,
        *,
        cursor: str,
        block_ms: int,
        metrics: StreamMetrics,
        control: tuple[str, ControlHandler] | None = None,
        on_exit: Callable[[LogReader], None] | None = None,
        idle_s: float = 5.0,
        lane_timeout_s: float | None = None,
        on_move: Callable[[Record], None] | None = None,
    ) -> None:
        self.client = client
        #: Called with every "job moved" marker read (the instance's own log only: it
        #: tells a paused owner at once that its job was taken over).
        self.on_move = on_move
        #: Reads go through a dedicated connection (a :class:`Lane`) unless this is None.
        self.lane_timeout_s = lane_timeout_s
        self.key = key
        #: Id of the last entry read (the next XREAD returns entries after it).
        self.cursor = cursor
        self.block_ms = block_ms
        self.metrics = metrics
        self.control = control
        self._control_cursor = "$"
        self.subs: dict[str, set[Subscription]] = {}
        self._on_exit = on_exit
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.idle_s = idle_s

    def add(self, sub: Subscription) -> str:
        """Register ``sub``; returns the cursor it will receive entries after."""
        self.subs.setdefault(sub.job_id, set()).add(sub)
        if (self.task is None or self.task.done()) and not self.stopping:
            self.task = asyncio.get_running_loop().create_task(self._run())
        return self.cursor

    def remove(self, sub: Subscription) -> None:
        """Unregister ``sub``."""
        subs = self.subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subs[sub.job_id]

    async def stop(self) -> None:
        """Stop the reading task."""
        self.stopping = True
        task, self.task = self.task, None
        await stop_task(task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        idle_since = checked = loop.time()
        lane = None if self.lane_timeout_s is None else Lane(self.client, self.lane_timeout_s)
        try:
            while not self.stopping:
                if loop.time() - checked >= self.idle_s / 2:
                    checked = loop.time()
                    self._poke_idle()
                if self.subs or self.control is not None:
                    idle_since = loop.time()
                elif loop.time() - idle_since > _IDLE_EXIT_S:
                    return
                streams = {self.key: self.cursor}
                if self.control is not None:
                    if self._control_cursor == "$":
                        # Resolve "$" once: a repeated "$" could miss entries between reads.
                        last = await self.client.xrevrange(self.control[0], count=1)
                        self._control_cursor = last[0][0].decode() if last else "0-0"
                    streams[self.control[0]] = self._control_cursor
                try:
                    if lane is None:
                        reply = await self.client.xread(streams, count=512, block=self.block_ms)
                    else:
                        reply = await lane.execute(
                            "XREAD", "COUNT", 512, "BLOCK", self.block_ms, "STREAMS",
                            *streams, *streams.values(),
                            extra_timeout_s=self.block_ms / 1000,
                        )  # fmt: skip
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("reading %s failed (%s); retrying", self.key, exc)
                    await asyncio.sleep(_RETRY_S)
                    continue
                self.metrics.redis_round_trips += 1
                for stream, entries in _stream_items(reply):
                    if stream == self.key:
                        self._dispatch(entries)
                    elif self.control is not None:
                        for entry_id, fields in entries:
                            self._control_cursor = entry_id.decode()
                            try:
                                await self.control[1](self._control_cursor, fields)
                            except Exception as exc:  # one bad request must not stop the reader
                                log.warning("control entry %s: %s", entry_id, exc)
        finally:
            # Unlisted before anything awaits: a subscriber must never join a reader that
            # has stopped reading.
            if self._on_exit is not None:
                self._on_exit(self)
            if lane is not None:
                await asyncio.shield(lane.close())

    def _poke_idle(self) -> None:
        """Wake subscribers that received nothing since the previous check, so they
        re-read their job (it may have moved or ended while its live entries were lost)."""
        for subs in self.subs.values():
            for sub in subs:
                if sub.pushed == sub.seen and not sub.queue:
                    sub.quiet += 1
                    if sub.quiet >= sub.patience:
                        sub.stale = True
                        sub.wake()
                else:
                    sub.quiet = 0
                sub.seen = sub.pushed

    def _dispatch(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        subs_by_job = self.subs
        on_move = self.on_move
        for entry_id, fields in entries:
            self.cursor = entry_id.decode()
            payload = fields.get(b"d")
            if payload is None:
                continue
            # A marker is ``[job, epoch, -1, instance]``; the bytes test skips decoding
            # entries that cannot hold one (a delta's text may match: it is only decoded).
            moves = on_move is not None and _MOVE in payload
            if not subs_by_job and not moves:
                continue
            try:
                records = codec.loads(payload)
            except ValueError:
                log.warning("unreadable entry %s in %s; skipped", entry_id, self.key)
                continue
            for record in records:
                if moves and record[2] < 0 and on_move is not None:
                    on_move(record)
                subs = subs_by_job.get(record[0])
                if subs:
                    for sub in subs:
                        sub.push(record)


def _stream_items(reply: Any) -> list[tuple[str, list[tuple[bytes, dict[bytes, bytes]]]]]:
    """XREAD replies as ``[(stream name, entries)]`` whatever the protocol version, from
    redis-py's parsed form or the raw one (fields as a flat list) a lane returns."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    return [(_text(name), [_entry(entry) for entry in entries]) for name, entries in pairs]


def _entry(entry: Any) -> tuple[bytes, dict[bytes, bytes]]:
    entry_id, fields = entry
    if isinstance(fields, dict):
        return entry_id, fields
    if not fields:
        return entry_id, {}
    it = iter(fields)
    return entry_id, dict(zip(it, it, strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
