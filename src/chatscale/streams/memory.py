"""Resumable streams in process memory: one instance, no Redis.

Every job's log is a list in memory; subscribers read it directly from their position, so a
slow subscriber costs nothing but its position (no per-subscriber buffer to overflow).
Finished jobs stay resumable for STREAM_FINISHED_TTL seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from chatscale.streams.base import EventSink, StreamManager
from chatscale.streams.errors import (
    InvalidEventId,
    JobExists,
    JobNotFound,
    TooManyListeners,
)
from chatscale.streams.model import Event, JobInfo, JobStatus, parse_event_id
from chatscale.streams.producer import Producer
from chatscale.tasks import Background

_SWEEP_S = 0.25
log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Follower:
    """A subscriber caught up with its job, handed each new event by the flush."""

    sink: EventSink
    position: int
    waiter: asyncio.Future[None]

    def release(self) -> None:
        if not self.waiter.done():
            self.waiter.set_result(None)


@dataclass(slots=True)
class _Job:
    job_id: str
    owner: str
    meta: dict[str, Any]
    created_at: float
    updated_at: float
    status: JobStatus = JobStatus.RUNNING
    events: list[Event] = field(default_factory=list)
    #: One future per subscriber waiting for the next events.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    #: The subscribers with a sink, caught up: the flush hands them the new events.
    followers: list[_Follower] = field(default_factory=list)
    listeners: int = 0
    expires_at: float = 0.0

    def notify(self) -> int:
        """Wake the waiting subscribers and hand the followers the new events; how many
        events the followers took."""
        waiters = self.waiters
        if waiters:
            self.waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        return self._hand_over() if self.followers else 0

    def _hand_over(self) -> int:
        events = self.events
        end = len(events)
        taken = 0
        staying: list[_Follower] = []
        for follower in self.followers:
            position = follower.position
            while position < end:
                event = events[position]
                if event.final:
                    # Yielded, as before the sinks: the answer's recording, started with the
                    # flush, runs first, so a client that reads the end and then asks for its
                    # conversation finds the answer there.
                    break
                try:
                    took = follower.sink(event)
                except Exception:
                    log.warning("an event sink failed; its subscriber reads on", exc_info=True)
                    took = False
                if not took:
                    break
                position += 1
                taken += 1
            follower.position = position
            if position < end:
                # An event to yield (declined, or the final one).
                follower.release()
            else:
                staying.append(follower)
        self.followers = staying
        return taken

    def release_followers(self) -> None:
        followers, self.followers = self.followers, []
        for follower in followers:
            follower.release()

    async def follow(self, position: int, sink: EventSink) -> int:
        """Be handed the events from ``position`` on until released; the position then."""
        follower = _Follower(sink, position, asyncio.get_running_loop().create_future())
        self.followers.append(follower)
        try:
            await follower.waiter
        finally:
            with contextlib.suppress(ValueError):
                self.followers.remove(follower)
        return follower.position

    def wait(self) -> asyncio.Future[None]:
        # A future of its own per subscriber: a cancelled subscriber (a client going away)
        # cancels only its own, with none of the extra future and callbacks a shield of a
        # shared one costs on every wake-up.
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        return waiter


class MemoryStreamManager(StreamManager):
    """The single-instance backend (``USE_REDIS_STREAMS`` off)."""

    #: A flush here is a list append and a wake-up, no round trip: the deltas of one turn of
    #: the event loop go out together, and none waits for a timer (h2: token p50 2.8 ->
    #: 1.5 ms at the same CPU, docs/benchmarks.md).
    default_coalesce_ms = 0

    def __init__(self, settings: Any, *, instance_id: str | None = None) -> None:
        super().__init__(settings, instance_id=instance_id)
        self._jobs: dict[str, _Job] = {}
        #: The running jobs of each owner (ids, in creation order), and the ended ones
        #: being recorded: what ``list_active`` reads, instead of scanning every job kept
        #: in memory on each call.
        self._running: dict[str, dict[str, None]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._recording = Background("recording an answer")

    async def start(self) -> None:
        """Start the expiry sweeper."""
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def close(self) -> None:
        """Stop the sweeper and the generation tasks started with :meth:`run`."""
        if self._closed:
            return
        self._closed = True
        self._flush()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self._cancel_runs()
        await self._recording.close(grace=2.0)
        for job in self._jobs.values():
            self.metrics.events_delivered += job.notify()
            job.release_followers()

    # --- producer side ------------------------------------------------------------------
    async def create(
        self, *, owner: str, meta: dict[str, Any] | None = None, job_id: str | None = None
    ) -> Producer:
        """Register a new running job and return its producer."""
        job_id = self._check_create(owner, meta, job_id)
        self._expire_one(job_id, time.time())
        if job_id in self._jobs:
            raise JobExists(job_id)
        now = time.time()
        meta = dict(meta or {})
        self._jobs[job_id] = _Job(job_id, owner, meta, now, now)
        self._running.setdefault(owner, {})[job_id] = None
        producer = Producer(self, job_id, owner, meta, created_at=now)
        self._producers[job_id] = producer
        self.metrics.jobs_created += 1
        self.metrics.jobs_active += 1
        return producer

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            if self.coalesce_s > 0:
                self._flush_handle = loop.call_later(self.coalesce_s, self._flush)
            else:
                self._flush_handle = loop.call_soon(self._flush)

    async def _relieve(self) -> None:
        self._flush()
        await asyncio.sleep(0)

    async def store_end(self, producer: Producer) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        now = time.time()
        for producer in self.backlog.take():
            events = producer._take()
            job = self._jobs.get(producer.job_id)
            if job is None or not events:
                continue
            job.events.extend(events)
            job.updated_at = now
            if producer.closed and job.status is JobStatus.RUNNING:
                job.status = producer.status
                job.expires_at = now + self.finished_ttl
                self._producers.pop(job.job_id, None)
                self.metrics.jobs_active -= 1
                self.metrics.jobs_finished += 1
                producer.final_stored = True
                if self._recorder is None:
                    self._not_running(job)
                else:
                    self._recording.spawn(self._recorded(producer, job))
            self.metrics.events_delivered += job.notify()

    async def _recorded(self, producer: Producer, job: _Job) -> None:
        """Record the ended job, then stop listing it (see :meth:`list_active`)."""
        try:
            await self._record(producer)
        finally:
            self._not_running(job)

    # --- subscriber side ----------------------------------------------------------------
    def _job(self, job_id: str, owner: str | None) -> _Job:
        job = self._expire_one(job_id, time.time()) if isinstance(job_id, str) else None
        if job is None or (owner is not None and owner != job.owner):
            raise JobNotFound(str(job_id))
        return job

    def subscribe(
        self,
        job_id: str,
        *,
        after: str | None = None,
        owner: str | None = None,
        sink: EventSink | None = None,
    ) -> AsyncIterator[Event]:
        """Replay the events after ``after``, then follow live until the final event
        (handed to ``sink`` as they are stored, once caught up: see the base class)."""
        return self._subscribe(job_id, after, owner, sink)

    async def _subscribe(
        self, job_id: str, after: str | None, owner: str | None, sink: EventSink | None
    ) -> AsyncIterator[Event]:
        job = self._job(job_id, owner)
        position = parse_event_id(job_id, after)
        if position > len(job.events):
            self.metrics.resume_misses += 1
            raise InvalidEventId(
                job_id, after, f"not in the log (its last event is {len(job.events)})"
            )
        if job.listeners >= self.max_listeners:
            raise TooManyListeners(job_id, self.max_listeners)
        metrics = self.metrics
        if position:
            metrics.resume_hits += 1
        if position < len(job.events):
            metrics.replays += 1
            metrics.replayed_events += len(job.events) - position
        job.listeners += 1
        metrics.subscribers += 1
        try:
            events = job.events
            while True:
                if position < len(events):
                    event = events[position]
                    position += 1
                    metrics.events_delivered += 1
                    yield event
                    if event.final:
                        return
                elif self._closed or (events and events[-1].final):
                    # Closed, or resumed after the final event: nothing more will come.
                    return
                elif sink is not None:
                    position = await job.follow(position, sink)
                else:
                    await job.wait()
        finally:
            job.listeners -= 1
            metrics.subscribers -= 1

    async def status(self, job_id: str, *, owner: str | None = None) -> JobInfo | None:
        """The job's info and text so far, or ``None``."""
        try:
            job = self._job(job_id, owner)
        except JobNotFound:
            return None
        return self._info(job, with_text=True)

    def _info(self, job: _Job, *, with_text: bool) -> JobInfo:
        text = ""
        if with_text:
            producer = self._producers.get(job.job_id)
            if producer is not None:
                text = producer.text
            elif job.events:
                text = str(job.events[-1].data.get("text", ""))
        return JobInfo(
            job_id=job.job_id,
            owner=job.owner,
            status=job.status,
            created_at=job.created_at,
            updated_at=job.updated_at,
            meta=dict(job.meta),
            text=text,
            last_event_id=job.events[-1].id if job.events else None,
        )

    async def list_active(self, owner: str) -> list[JobInfo]:
        """The running jobs of ``owner``, oldest first, and those ended but not recorded
        yet (with their final status)."""
        running = self._running.get(owner)
        if not running:
            return []
        jobs = [job for job_id in running if (job := self._jobs.get(job_id)) is not None]
        jobs.sort(key=lambda j: j.created_at)
        return [self._info(j, with_text=False) for j in jobs]

    def _not_running(self, job: _Job) -> None:
        running = self._running.get(job.owner)
        if running is not None:
            running.pop(job.job_id, None)
            if not running:
                del self._running[job.owner]

    async def abort(self, job_id: str, *, owner: str | None = None, wait: float = 3.0) -> bool:
        """Abort a running job; ``True`` once its ``aborted`` event is stored."""
        job = self._job(job_id, owner)
        producer = self._producers.get(job.job_id)
        if producer is None or producer.closed:
            return False
        self.metrics.aborts += 1
        producer.close_with("aborted", {}, reason="aborted")
        self._flush()
        return True

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - public API
        """Let running jobs finish within ``timeout``; end what is left with ``error``."""
        self._draining = True
        deadline = time.monotonic() + max(0.0, timeout)
        # Polling keeps drain independent of how producers end (complete, abort, expiry).
        while self._producers and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        for producer in list(self._producers.values()):
            producer.close_with(
                "error",
                {"message": "the server shut down before the response was complete"},
                reason="shutdown",
            )
        self._flush()

    # --- expiry -------------------------------------------------------------------------
    def _expire_one(self, job_id: str, now: float) -> _Job | None:
        """The job ``job_id`` unless it expired (then it is removed). A request looks at its
        own job only: the sweeper (every 0.25 s) expires the others and ends stalled
        producers, where a scan of every job on every request cost O(jobs) each."""
        job = self._jobs.get(job_id)
        if job is not None and job.expires_at and job.expires_at <= now and job.listeners == 0:
            del self._jobs[job_id]
            return None
        return job

    def _expire(self, now: float) -> None:
        for job in [j for j in self._jobs.values() if j.expires_at and j.expires_at <= now]:
            if job.listeners == 0:
                del self._jobs[job.job_id]
        for producer in list(self._producers.values()):
            job = self._jobs[producer.job_id]
            if now - job.updated_at > self.stall_s:
                producer.close_with(
                    "error",
                    {"message": "the response stalled (no output for STREAM_RUNNING_TTL)"},
                    reason="stalled",
                )
                self._flush()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            self._expire(time.time())
