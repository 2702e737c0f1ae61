"""The read side of the Redis backend: a subscriber joins its job's channel, reads the log
after its position, then takes live batches from the channel, delivering each sequence
number once, in order.

Joining before reading is what makes it exact: ``append.lua`` stores and publishes in one
step, so every batch is either in the log when the subscriber reads it or arrives on the
channel afterwards (duplicates are dropped by sequence number). Anything that may have lost
a message (a gap in the numbers, an overflow, a dropped connection, a long silence) sends the
subscriber back to the log, never past a missing event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatscale.redis.keys import KeySpace
from chatscale.redis.replication import CONFIRM_S, Replication
from chatscale.streams import codec
from chatscale.streams.errors import InvalidEventId, JobNotFound, TooManyListeners
from chatscale.streams.metrics import StreamMetrics
from chatscale.streams.model import (
    Event,
    JobInfo,
    JobStatus,
    parse_event_id,
    text_of,
)
from chatscale.streams.redis_hub import Hub, Listener, Record
from chatscale.streams.redis_store import JobRecord, JobStore

#: How long a resume position beyond the log of a running job is looked for again before
#: it is refused (after a Redis failover the producer writes the lost tail again).
_RESUME_WAIT_S = 2.0
_RESUME_POLL_S = 0.05
#: A silent subscription re-reads its job after 1, 2, 4... 16 idle checks.
_MAX_PATIENCE = 16
#: Re-reads that find the job gone before a subscription gives up on it.
_GONE_CHECKS = 3

#: How recent (seconds, by this host's clock) an end must be for a listing to ask whether
#: the replicas have it: an end is taken as stored CONFIRM_S after it, and a minute covers
#: the clocks' skew.
_RECENT_END_S = CONFIRM_S + 60.0

#: How long (seconds after its end, by this host's clock) an ended job not recorded yet is
#: still listed as active: beyond the recorder's own retries (30 s), with a margin for the
#: clocks' skew. A job whose recording instance died is listed no longer than that.
RECORD_GRACE_S = 60.0


class Follow:
    """A subscriber's position: delivers each sequence number once, in order."""

    __slots__ = ("job_id", "last", "position", "texts")

    def __init__(self, job_id: str, position: int) -> None:
        self.job_id = job_id
        self.position = position
        #: The last sequence number delivered.
        self.last = position
        #: Delta texts delivered (to rebuild a final event's text).
        self.texts: list[str] = []

    def take(self, first: int, items: list[Any]) -> list[Event] | None:
        """The new events of a batch starting at ``first``; ``None`` for a gap."""
        end = first + len(items) - 1
        start = self.last + 1
        if end < start:
            return []
        if first > start:
            return None
        if first < start:
            items = items[start - first :]
        self.last = end
        texts = self.texts
        for item in items:
            if isinstance(item, str):
                texts.append(item)
        return codec.unpack(start, items)

    def take_events(self, events: list[Event]) -> list[Event] | None:
        """The new ones of consecutive stored events; ``None`` for a gap."""
        start = self.last + 1
        if events and int(events[0].id) > start:
            return None
        out = [e for e in events if int(e.id) >= start]
        if out:
            self.last = int(out[-1].id)
            self.texts.extend(str(e.data["text"]) for e in out if e.type == "delta")
        return out

    def unread(self, event: Event) -> None:
        """Take back the final ``event`` (not delivered: it is read again later)."""
        self.last = int(event.id) - 1

    def accept(self, record: Record) -> list[Event] | None:
        """The new events of a published batch; ``None`` for a gap."""
        return self.take(record[1], record[2])


class Reader:
    """Subscriptions, status and listings of the Redis backend."""

    def __init__(
        self,
        store: JobStore,
        hub: Hub,
        keys: KeySpace,
        metrics: StreamMetrics,
        *,
        max_listeners: int,
        subscriber_buffer: int,
        replication: Callable[[str], Replication] | None = None,
    ) -> None:
        self.store = store
        #: The replication of the shard that holds a job's keys (by its hash key): a final
        #: event read from the log is delivered only once the replicas have it (see
        #: ``_durable_end``). ``None``: ends are told as read.
        self.replication = replication
        self.hub = hub
        self.keys = keys
        self.metrics = metrics
        self.max_listeners = max_listeners
        self.subscriber_buffer = subscriber_buffer
        self._listeners: dict[str, int] = {}

    async def subscribe(
        self, job_id: str, after: str | None, owner: str | None
    ) -> AsyncIterator[Event]:
        """Replay the events after ``after`` from the log, then follow live to the end."""
        position = parse_event_id(str(job_id), after)
        if self._listeners.get(job_id, 0) >= self.max_listeners:
            raise TooManyListeners(job_id, self.max_listeners)
        # Counted before the first await, so concurrent subscribes cannot overshoot the cap.
        self._listeners[job_id] = self._listeners.get(job_id, 0) + 1
        self.metrics.subscribers += 1
        try:
            job = await self.store.job(job_id)
            if job is None or (owner is not None and owner != job.owner):
                raise JobNotFound(str(job_id))
            channel = self.keys.stream_events(job_id)
            listener = Listener(job_id, self.subscriber_buffer)
            await self.hub.join(channel, listener)
            try:
                await self._check_position(job, position, after)
                async for event in self._follow(Follow(job_id, position), listener):
                    yield event
            finally:
                self.hub.leave(channel, listener)
        finally:
            self._listeners[job_id] -= 1
            if not self._listeners[job_id]:
                del self._listeners[job_id]
            self.metrics.subscribers -= 1

    async def _check_position(self, job: JobRecord, position: int, after: str | None) -> None:
        """Refuse a resume position beyond the log, unless the job runs and Redis may have
        lost the tail the client saw (its producer writes it again within a window)."""
        confirm_by = time.monotonic() + _RESUME_WAIT_S
        current: JobRecord | None = job
        while current is not None and position > current.seq:
            if current.status is not JobStatus.RUNNING or time.monotonic() > confirm_by:
                break
            await asyncio.sleep(_RESUME_POLL_S)
            current = await self.store.job(job.job_id)
        if current is None or position > current.seq:
            self.metrics.resume_misses += 1
            last = current.seq if current is not None else 0
            raise InvalidEventId(job.job_id, after, f"not in the log (its last event is {last})")
        if position:
            self.metrics.resume_hits += 1

    async def _follow(self, state: Follow, listener: Listener) -> AsyncIterator[Event]:
        metrics = self.metrics
        job_id = state.job_id
        channel = self.keys.stream_events(job_id)
        first_pass = True
        gone = 0
        held = False
        while not self.hub.closed:
            # 1. The log after our position (the listener already queues what comes next).
            listener.reset()
            before = state.last
            async for page in self.store.pages(job_id, state.last):
                events = state.take_events(page)
                if events is None:
                    break  # cannot happen (pages are contiguous); read again
                if first_pass and events:
                    metrics.replays += state.last - len(events) == before
                    metrics.replayed_events += len(events)
                metrics.events_delivered += len(events)
                for event in events:
                    if event.final:
                        if not await self._durable_end(job_id):
                            # Stored, but not yet on a replica: not told yet (the writer
                            # publishes it once a replica has it; the log is read again).
                            state.unread(event)
                            held = True
                            break
                        yield await self._with_text(state, event)
                        return
                    yield event
            if first_pass or listener.stale:
                # Is the job still there, and running? (A finished job's final event is
                # in the log; resuming after it ends here.)
                job = await self.store.job(job_id)
                if job is None:
                    gone += 1
                    if first_pass or gone >= _GONE_CHECKS:
                        return
                elif job.status is not JobStatus.RUNNING and state.last >= job.seq:
                    return
                else:
                    gone = 0
            quiet = (state.last == before or held) and listener.stale
            held = False
            listener.patience = min(_MAX_PATIENCE, listener.patience * 2) if quiet else 1
            first_pass = False
            # 2. Live batches, until the end or anything that calls for the log again.
            while True:
                record = listener.pop()
                if record is None:
                    if self.hub.closed:
                        return
                    if listener.overflowed:
                        metrics.subscriber_overflows += 1
                        break
                    if listener.lost:
                        await self.hub.rejoin(channel, listener)
                        break
                    if listener.stale:
                        break
                    await listener.wait()
                    continue
                events = state.accept(record)
                if events is None:
                    break  # a gap: a message was lost; the log has it
                metrics.events_delivered += len(events)
                for event in events:
                    if event.final:
                        yield await self._with_text(state, event)
                        return
                    yield event

    async def _durable_end(self, job_id: str, job: JobRecord | None = None) -> bool:
        """Whether a final event just read from the log may be told: as for the writer's
        own publication, once the replicas have it, or once it was stored CONFIRM_S ago (the
        writer takes it as stored by then), or at once without replicas. A former master
        back from a pause takes writes until the sentinels demote it: a client that read an
        end there was told ``done`` for an answer the new master still had running (checker
        Sentinel seeds 2038, 2102). On Cluster the writer holds a final batch's publication
        until its shard's replica has it, and a re-read of the log in between (a
        subscription that was behind or lost messages) told it anyway.

        An end the writer told (``job.told``, read now or passed as ``job``) is told here
        too: the writer may have taken it as stored without a replica (replication
        degraded), and its clients were told ``done``; an instance judging by its own clock
        said ``running`` for up to CONFIRM_S more (checker Sentinel seed 12204). Nothing
        here depends on this instance's own view of replication (whether it found it
        degraded): every instance judges an end by the same facts, or one told ``done``
        while another said ``running`` (checker Sentinel seed 12407)."""
        if self.replication is None or (job is not None and job.told):
            return True
        key = self.keys.stream_job(job_id)
        replication = self.replication(key)
        if not replication.waits:
            return True
        count, now = await self.store.replicated(replication.wanted, key)
        if replication.confirms(count):
            return True
        job = await self.store.job(job_id)
        return job is not None and (job.told or now - job.updated_at >= CONFIRM_S)

    async def _with_text(self, state: Follow, event: Event) -> Event:
        """A final event with its ``text`` (stored once, as the deltas)."""
        if "text" in event.data:
            return event
        text = "".join(state.texts)
        if state.position:
            prefix = await self.store.events(state.job_id, 0, until=state.position)
            text = text_of(prefix) + text
        return Event(event.id, event.type, {"text": text, **event.data})

    async def status(self, job_id: str, owner: str | None) -> JobInfo | None:
        """The job's info and text so far (read from Redis), or ``None``.

        As a subscriber is told it: an end stored on the master but not yet on the
        replicas (see ``_durable_end``) is not reported; the job is ``running`` at the
        event before it. (The job's hash says finished from the final append on, before the
        WAIT that confirms it: a status read then answered ``complete`` for an end that a
        failover could still lose.)"""
        job = await self.store.job(job_id)
        if job is None or (owner is not None and owner != job.owner):
            return None
        events = await self.store.events(job_id, 0)
        status = job.status
        if (
            status is not JobStatus.RUNNING
            and events
            and events[-1].final
            and not await self._durable_end(job_id, job)
        ):
            status = JobStatus.RUNNING
            events = events[:-1]
        return JobInfo(
            job_id,
            job.owner,
            status,
            job.created_at,
            job.updated_at,
            job.meta,
            text_of(events),
            events[-1].id if events else None,
        )

    async def list_active(self, owner: str) -> list[JobInfo]:
        """The running jobs of ``owner``, oldest first; a job whose end the replicas have
        not confirmed yet is running, as :meth:`status` says. A job that ended and is not
        recorded yet is listed with its final status, for RECORD_GRACE_S at most (its
        recording instance may have died)."""
        client = self.store.client
        key = self.keys.user_jobs(owner)
        ids = [i.decode() for i in await client.zrange(key, 0, -1)]
        jobs = await asyncio.gather(*(self.store.job(i) for i in ids))
        gone = [i for i, job in zip(ids, jobs, strict=True) if job is None]
        if gone:
            await client.zrem(key, *gone)
        unconfirmed = await self._unconfirmed_ends([j for j in jobs if j is not None])
        now = time.time()
        listed = []
        for j in jobs:
            if j is None:
                continue
            if j.status is JobStatus.RUNNING or j.job_id in unconfirmed:
                status = JobStatus.RUNNING
            elif j.unrecorded and now - j.updated_at < RECORD_GRACE_S:
                status = j.status
            else:
                continue
            listed.append(
                JobInfo(j.job_id, j.owner, status, j.created_at, j.updated_at, j.meta, "", None)
            )
        return listed

    async def _unconfirmed_ends(self, jobs: list[JobRecord]) -> set[str]:
        """The finished ``jobs`` whose end the replicas have not confirmed (``_durable_end``).
        Only those that ended lately are asked about (by this host's clock, with a margin
        for its skew from Redis's): an older end was confirmed, or taken as stored, long
        ago, and a user's list holds every job of the last day."""
        if self.replication is None:
            return set()
        now = time.time()
        ended = [
            j
            for j in jobs
            if j.status is not JobStatus.RUNNING and now - j.updated_at < _RECENT_END_S
        ]
        if not ended:
            return set()
        durable = await asyncio.gather(*(self._durable_end(j.job_id, j) for j in ended))
        return {j.job_id for j, told in zip(ended, durable, strict=True) if not told}
