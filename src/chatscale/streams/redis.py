"""Resumable streams on Redis: many instances, any topology (standalone, Cluster, Sentinel).

The parts, each an object with its own state, wired here:

* :class:`~chatscale.streams.redis_writer.Writer` appends each running job's new events to
  the job's own log every coalescing window, with one script per job that checks the
  producer's epoch, stores and publishes (``append.lua``).
* :class:`~chatscale.streams.redis_hub.Hub` holds this process's pub/sub connections and
  fans each job's channel out to the local subscribers.
* :class:`~chatscale.streams.redis_reader.Reader` serves subscriptions, ``status`` and
  ``list_active`` from the log and the hub.
* :class:`~chatscale.streams.redis_liveness.Liveness` beats (on Redis's clock) and finds the
  jobs of instances that stopped; :meth:`RedisStreamManager.take_over` claims one (epoch +1,
  so the old producer can no longer write) and continues or ends it.
* :class:`~chatscale.streams.redis_store.JobStore` reads job hashes and logs.

See docs/streams.md for the guarantees and their limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster

from chatscale.redis.client import create_client
from chatscale.redis.connection import close_client
from chatscale.redis.replication import Replication
from chatscale.redis.transient import TRANSIENT_REDIS_ERRORS
from chatscale.streams import codec
from chatscale.streams.base import EventSink, Recorder, StreamManager
from chatscale.streams.errors import InvalidEvent, JobExists, JobNotFound
from chatscale.streams.model import Event, JobInfo, JobStatus, text_of
from chatscale.streams.producer import Producer
from chatscale.streams.redis_hub import Hub
from chatscale.streams.redis_liveness import Liveness
from chatscale.streams.redis_reader import Reader
from chatscale.streams.redis_store import JobRecord, JobStore, events_of
from chatscale.streams.redis_writer import JobWrite, Writer
from chatscale.streams.scripts import ABORT, CLAIM, CREATE, DISCARD, LISTED
from chatscale.tasks import stop_task

if TYPE_CHECKING:
    from chatscale.config import Settings
    from chatscale.redis import RedisConnection

log = logging.getLogger(__name__)

_ABORT_POLL_S = 0.05
_DRAIN_POLL_S = 0.05
#: How often (seconds) a drain with nobody to hand over to looks for an instance again.
_OTHERS_POLL_S = 0.25


class RedisStreamManager(StreamManager):
    """The multi-instance backend (``USE_REDIS_STREAMS=true``)."""

    #: One ``append.lua`` call per window for every job with new deltas (b and b100:
    #: 1 ms beat 2 ms on p99 and CPU, docs/benchmarks.md).
    default_coalesce_ms = 1

    def __init__(
        self, settings: Settings, redis: RedisConnection, *, instance_id: str | None = None
    ) -> None:
        super().__init__(settings, instance_id=instance_id)
        self.redis = redis
        # redis-py types replies as unions over decode modes; ours are always bytes.
        self.client: Any = redis.client
        self.keys = redis.keys
        self.lease_s = settings.stream_lease_ttl / 1000
        self.takeover = settings.stream_takeover
        self.drain_timeout = float(settings.stream_drain_timeout)
        self.store = JobStore(
            self.client, self.keys, self.metrics, timeout_s=redis.config.socket_timeout_s
        )
        self.hub = Hub(
            self.client,
            probe_s=max(1.0, redis.config.socket_timeout_s),
            idle_s=max(0.5, self.lease_s / 2),
        )
        self.reader = Reader(
            self.store,
            self.hub,
            self.keys,
            self.metrics,
            max_listeners=self.max_listeners,
            subscriber_buffer=self.subscriber_buffer,
            replication=self._replication_of,
        )
        self.writer = Writer(
            self.client,
            self.keys,
            self.metrics,
            instance_id=self.instance_id,
            publish_cmd=self.hub.publish_cmd,
            coalesce_s=self.coalesce_s,
            running_ttl=self.running_ttl,
            finished_ttl=self.finished_ttl,
            stall_s=self.stall_s,
            deadline_s=redis.config.socket_timeout_s,
            backlog=self.backlog,
            replication=redis.replication,
            on_fenced=self._fence,
            on_stored_end=self._stored_end,
        )
        # On Cluster the heartbeat has a client of its own: redis-py answers a connection
        # error to one node by rediscovering the cluster before the client's next command,
        # so the writes of this instance's jobs to a dead master held its heartbeat (to a
        # healthy shard) past the lease, and living instances' jobs were taken (checker
        # cluster seeds 3014, 3044).
        self._beat_client: Any = (
            create_client(redis.config) if isinstance(self.client, RedisCluster) else None
        )
        self.liveness = Liveness(
            self.client,
            self.keys,
            beat_client=self._beat_client,
            instance_id=self.instance_id,
            lease_s=self.lease_s,
            jobs_ttl_s=self.writer.index_ttl,
            claim=self.take_over,
            local_jobs=lambda: set(self.writer.jobs) | self._creating | self.writer.ending,
        )
        self.liveness.on_master_moved = self._master_moved
        self.liveness.on_replicas = redis.replication.saw
        self._control = self.keys.stream_instance_control(self.instance_id)
        self._jobs_key = self.keys.stream_instance_jobs(self.instance_id)
        #: Jobs being created here: listed under this instance before they have a
        #: producer, which the reaper must not take for orphans.
        self._creating: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._unregister_ping: Any = None
        self._started = False

    def _replication_of(self, key: str) -> Replication:
        """The replication a write to ``key`` waits for: on Cluster its shard's."""
        if isinstance(self.client, RedisCluster):
            return self.writer.shard_of(key)
        return self.redis.replication

    @property
    def stall_s(self) -> float:
        """A producer silent this long (seconds) is ended with ``error``."""
        return self._stall_s

    @stall_s.setter
    def stall_s(self, value: float) -> None:
        self._stall_s = value
        writer: Writer | None = getattr(self, "writer", None)
        if writer is not None:
            writer.stall_s = value

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Beat, listen to this instance's control channel, start the writer and reaper."""
        if self._started:
            return
        self._started = True
        await self.liveness.beat()
        await self.hub.handle(self._control, self._on_control)
        self._tasks = [asyncio.get_running_loop().create_task(self.writer.run())]
        self.liveness.start()
        self._unregister_ping = self.redis.keepalive.register(self.client.ping)

    async def close(self) -> None:
        """Write what is buffered, then stop every task and end every subscription (running
        jobs are left as they are: call :meth:`drain` first to hand them over)."""
        if self._closed:
            return
        self._closed = True
        # The writing task first: the last flush runs here, alone on the writer's connection
        # (one round trip at a time), which goes back to the pool with the writer's close.
        for task in self._tasks:
            await stop_task(task)
        if self._started:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.writer.flush()
        if self._unregister_ping is not None:
            self._unregister_ping()
        await self._cancel_runs()
        await self.liveness.close()
        if self._beat_client is not None:
            await close_client(self._beat_client)
        await self.writer.close()
        await self.hub.close()
        await self.store.close()
        for job in list(self.writer.jobs.values()):
            job.producer.closed = True
            job.producer.aborted.set()

    # --- producer side ------------------------------------------------------------------
    async def create(
        self, *, owner: str, meta: dict[str, Any] | None = None, job_id: str | None = None
    ) -> Producer:
        """Register a new running job (in Redis) and return its producer.

        Listed under this instance first, so that if anything below fails half way the job
        is either removed again or found by this instance's reaper; never left unowned.
        """
        job_id = self._check_create(owner, meta, job_id)
        try:
            meta_json = codec.dumps(meta or {})
        except (TypeError, ValueError) as exc:
            raise InvalidEvent(f"meta is not JSON: {exc}") from exc
        now = time.time()
        keys = [self.keys.stream_job(job_id), self.keys.stream_log(job_id)]
        self._creating.add(job_id)
        try:
            return await self._create(job_id, owner, meta, meta_json, keys, now)
        finally:
            self._creating.discard(job_id)

    async def _create(
        self,
        job_id: str,
        owner: str,
        meta: dict[str, Any] | None,
        meta_json: bytes,
        keys: list[str],
        now: float,
    ) -> Producer:
        await self._list_here(job_id)
        try:
            created = await CREATE(
                self.client,
                keys,
                [
                    owner,
                    meta_json,
                    self.instance_id,
                    now,
                    self.running_ttl,
                    1,
                    now,
                    int(self.writer.records),
                ],
            )
            if not created:
                raise JobExists(job_id)
            await LISTED(
                self.client,
                [self.keys.user_jobs(owner)],
                [job_id, now, self.writer.index_ttl],
            )
        except BaseException as exc:
            await self._undo_create(job_id, keys, existed=isinstance(exc, JobExists))
            raise
        self.metrics.redis_round_trips += 3
        producer = Producer(self, job_id, owner, dict(meta or {}), created_at=now)
        self.writer.adopt(producer, [], 0)
        self._producers[job_id] = producer
        self.metrics.jobs_active += 1
        self.metrics.jobs_created += 1
        return producer

    async def _undo_create(self, job_id: str, keys: list[str], *, existed: bool) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                if not existed:
                    await DISCARD(self.client, keys, [self.instance_id, 1])
                await self.client.srem(self._jobs_key, job_id)

    def _master_moved(self) -> None:
        self.writer.replication.master_moved()
        self.hub.reconnect()
        self.writer.interrupt()

    async def _list_here(self, job_id: str) -> None:
        """List ``job_id`` under this instance (the reaper's index), with its expiry."""
        await LISTED(self.client, [self._jobs_key], [job_id, "", self.liveness.jobs_ttl_s])

    def _schedule_flush(self) -> None:
        self.writer.schedule()

    async def _relieve(self) -> None:
        await self.writer.flushed()

    async def store_end(self, producer: Producer) -> None:
        await self.writer.stored_end(producer, max(5.0, 3 * self.lease_s))

    def set_recorder(self, fn: Recorder | None) -> None:
        super().set_recorder(fn)
        self.writer.records = fn is not None

    async def _stored_end(self, producer: Producer) -> None:
        if self._producers.get(producer.job_id) is producer:
            del self._producers[producer.job_id]
            self.metrics.jobs_active -= 1
        if self._recorder is not None:
            await self._record(producer)
            await self._mark_recorded(producer.job_id)

    async def _mark_recorded(self, job_id: str) -> None:
        """The job's end is recorded (or its recorder gave up): listings show it no longer.
        (Should this fail, they stop after RECORD_GRACE_S.)"""
        with contextlib.suppress(Exception):
            await self.client.hdel(self.keys.stream_job(job_id), "unrecorded")

    def _fence(self, job: JobWrite) -> None:
        """Stop a producer whose job another producer owns now (another instance, or a
        newer producer here). Nothing it numbers is stored: the job's epoch moved on."""
        producer = job.producer
        producer.closed = True
        producer.end_reason = "taken_over"
        producer.aborted.set()
        if self.writer.forget(job) and self._producers.get(producer.job_id) is producer:
            del self._producers[producer.job_id]
            self.metrics.jobs_active -= 1

    async def _on_control(self, data: bytes) -> None:
        """An abort or a move addressed to this instance: ``abort:<job>`` or
        ``moved:<epoch>:<job>``."""
        kind, _, rest = data.decode().partition(":")
        if kind == "abort":
            job = self.writer.jobs.get(rest)
            if job is not None and not job.producer.closed:
                self.metrics.aborts += 1
                job.producer.close_with("aborted", {}, reason="aborted")
        elif kind == "moved":
            epoch, _, job_id = rest.partition(":")
            job = self.writer.jobs.get(job_id)
            if job is not None and job.producer.epoch < int(epoch):
                log.warning("job %s was taken over by another instance", job_id)
                self._fence(job)

    async def _record_orphan(self, job: JobRecord) -> None:
        """Record an ended job whose instance stopped before recording it (its end was
        stored, the instance died before the answer reached its conversation), from the
        job's log: the text and final event every subscriber received."""
        if self._recorder is None or not job.unrecorded:
            return
        events = await self.store.events(job.job_id)
        if not events or not events[-1].final:
            return  # not readable as ended here: listings stop after RECORD_GRACE_S
        final = events[-1]
        producer = Producer(
            self,
            job.job_id,
            job.owner,
            job.meta,
            created_at=job.created_at,
            seq=len(events),
            text=text_of(events),
            epoch=job.epoch,
        )
        producer.closed = producer.final_stored = True
        producer.status = job.status
        producer.end_reason = "recorded_for_a_stopped_instance"
        producer.end_data = {k: v for k, v in final.data.items() if k != "text"}
        log.warning(
            "instance %s records the end of job %s, which instance %s stored but did not record",
            self.instance_id,
            job.job_id,
            job.instance,
        )
        await self._record(producer)
        await self._mark_recorded(job.job_id)

    # --- takeover -----------------------------------------------------------------------
    async def take_over(self, dead: str, job_id: str, *, abort: bool = False) -> Producer | None:
        """Claim ``job_id`` from the stopped instance ``dead`` and continue or end it.

        A draining instance claims nothing more (an abort's claim, which ends the job,
        excepted): the jobs it has are being handed over."""
        claiming = self.liveness.claiming
        if job_id in claiming or (self._draining and not abort):
            return None
        claiming.add(job_id)
        try:
            return await self._claim(dead, job_id, abort=abort)
        finally:
            claiming.discard(job_id)

    async def _claim(self, dead: str, job_id: str, *, abort: bool) -> Producer | None:
        job_key = self.keys.stream_job(job_id)
        # Listed as ours first: if anything below fails, our reaper claims it again.
        await self._list_here(job_id)
        epoch, seq = (
            int(x)
            for x in await CLAIM(
                self.client,
                [job_key],
                [dead, self.instance_id, time.time(), self.running_ttl, "1" if abort else ""],
            )
        )
        if not epoch:
            current = await self.store.job(job_id)
            if current is not None and current.status is not JobStatus.RUNNING:
                await self._record_orphan(current)
        if dead != self.instance_id:
            await self.client.srem(self.keys.stream_instance_jobs(dead), job_id)
        if not epoch:
            if (
                current is None
                or current.instance != self.instance_id
                or current.status is not JobStatus.RUNNING
            ):
                await self.client.srem(self._jobs_key, job_id)
            return None
        self.metrics.takeovers += 1
        # A paused old owner learns it at once (else at its next write, which is refused).
        await self._publish(
            self.keys.stream_instance_control(dead), f"moved:{epoch}:{job_id}".encode()
        )
        job = await self.store.job(job_id)
        if job is None:
            return None
        batches = [b async for page in self.store.batches(job_id) for b in page]
        events: list[Event] = []
        for batch in batches:
            events.extend(events_of(batch, len(events)))
        if len(events) != seq:
            log.warning("job %s: log holds %d events, its hash says %d", job_id, len(events), seq)
        text = text_of(events)
        log.info(
            "instance %s took job %s over from instance %s at event %d (epoch %d)",
            self.instance_id,
            job_id,
            dead,
            seq,
            epoch,
        )
        producer = Producer(
            self,
            job_id,
            job.owner,
            job.meta,
            created_at=job.created_at,
            seq=len(events),
            text=text,
            size=sum(len(str(e.data["text"]).encode()) for e in events if e.type == "delta"),
            epoch=epoch,
        )
        self.writer.adopt(producer, batches, len(events))
        self._producers[job_id] = producer
        self.metrics.jobs_active += 1
        if abort or job.abort:
            self.metrics.aborts += 1
            producer.close_with("aborted", {}, reason="aborted")
        elif self.takeover and self._continuation is not None:
            # Also while draining: a claim under way when the drain began is waited for,
            # and its job then handed over (or finished) with the others.
            info = JobInfo(
                job_id,
                job.owner,
                JobStatus.RUNNING,
                job.created_at,
                time.time(),
                dict(job.meta),
                text,
                producer.last_event_id,
            )
            self.run(producer, self._continuation(info))
        else:
            why = "takeover is off" if not self.takeover else "no continuation is registered"
            producer.close_with(
                "error",
                {
                    "message": f"the instance producing this response stopped ({why})",
                    "code": "producer_lost",
                },
                reason="producer_lost",
            )
        if producer.closed:
            await self.store_end(producer)
        return producer

    async def _publish(self, channel: str, data: bytes) -> None:
        with contextlib.suppress(Exception):
            if isinstance(self.client, RedisCluster):
                await self.client.execute_command(
                    "SPUBLISH", channel, data, target_nodes=self.client.get_node_from_key(channel)
                )
            else:
                await self.client.publish(channel, data)

    # --- subscriber side ----------------------------------------------------------------
    def subscribe(
        self,
        job_id: str,
        *,
        after: str | None = None,
        owner: str | None = None,
        sink: EventSink | None = None,
    ) -> AsyncIterator[Event]:
        """Replay the events after ``after`` from Redis, then follow live to the end (every
        event is yielded: ``sink`` is not used on Redis)."""
        return self.reader.subscribe(job_id, after, owner)

    async def status(self, job_id: str, *, owner: str | None = None) -> JobInfo | None:
        """The job's info and text so far (read from Redis), or ``None``."""
        return await self.reader.status(job_id, owner)

    async def list_active(self, owner: str) -> list[JobInfo]:
        """The running jobs of ``owner``, oldest first."""
        return await self.reader.list_active(owner)

    async def abort(self, job_id: str, *, owner: str | None = None, wait: float = 3.0) -> bool:
        """Ask the owning instance to stop the job; ``True`` once ``aborted`` is stored."""
        job = await self.store.job(job_id)
        if job is None or (owner is not None and owner != job.owner):
            raise JobNotFound(str(job_id))
        if job.status is not JobStatus.RUNNING:
            return False
        local = self.writer.jobs.get(job_id)
        if local is not None and job.instance == self.instance_id:
            producer = local.producer
            if producer.closed:
                return False
            self.metrics.aborts += 1
            producer.close_with("aborted", {}, reason="aborted")
            await self.store_end(producer)
            return producer.final_stored and producer.status is JobStatus.ABORTED
        owner_instance = await ABORT(self.client, [self.keys.stream_job(job_id)], [])
        if not owner_instance:
            return False
        instance = owner_instance.decode()
        await self._publish(self.keys.stream_instance_control(instance), f"abort:{job_id}".encode())
        deadline = time.monotonic() + max(0.0, wait)
        while time.monotonic() < deadline:
            await asyncio.sleep(_ABORT_POLL_S)
            current = await self.store.job(job_id)
            if current is None:
                return False
            if current.status is not JobStatus.RUNNING:
                return current.status is JobStatus.ABORTED
            if await self.liveness.dead(current.instance):
                taken = await self.take_over(current.instance, job_id, abort=True)
                return taken is not None and taken.status is JobStatus.ABORTED
        return False

    # --- shutdown -----------------------------------------------------------------------
    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - public API
        """Hand running jobs over to other instances (takeover on and another instance
        alive, or alive within ``timeout``), or let them finish within ``timeout`` and end
        the rest with ``error``."""
        self._draining = True
        self.liveness.reaping = False
        # Claims under way (a reaper round that began before) end first: their jobs are
        # running here then, and go with the others. (A claim that ended after the
        # hand-over below used to end its job with a "producer_lost" error: a rolling
        # restart in CI, where the draining instance claimed the answer of the one that
        # had just restarted.)
        settle_by = time.monotonic() + max(0.5, timeout)
        while self.liveness.claiming and time.monotonic() < settle_by:  # noqa: ASYNC110
            await asyncio.sleep(_DRAIN_POLL_S / 5)
        deadline = time.monotonic() + max(0.0, timeout)
        others = await self.liveness.alive_others() if self.takeover else []
        if self.takeover and not others:
            # Nobody to hand over to yet: the jobs go on here, and go over to the first
            # instance that starts meanwhile (a redeploy that stops this one before its
            # replacement is up; they ended with an error at the timeout before).
            others_due = time.monotonic() + _OTHERS_POLL_S
            while self.writer.running() and time.monotonic() < deadline:
                await asyncio.sleep(_DRAIN_POLL_S)
                if time.monotonic() >= others_due:
                    others_due = time.monotonic() + _OTHERS_POLL_S
                    with contextlib.suppress(*TRANSIENT_REDIS_ERRORS):
                        others = await self.liveness.alive_others()
                    if others:
                        break
        if others and self.writer.running():
            # Hand over: stop producing, store everything, then mark this instance stopped
            # so the other instances' reapers claim the jobs at their next round.
            jobs = self.writer.running()
            for job in jobs:
                job.producer.aborted.set()
            await self._cancel_runs()
            for job in jobs:
                job.producer.closed = True
                job.producer.end_reason = "handed_over"
            self.writer.kick()
            deadline = time.monotonic() + max(0.5, timeout)
            while self.writer.pending() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(_DRAIN_POLL_S)
            await self.liveness.hand_over()
            return
        while self.writer.running() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_DRAIN_POLL_S)
        ending = [job.producer for job in self.writer.running()]
        for producer in ending:
            producer.close_with(
                "error",
                {"message": "the server shut down before the response was complete"},
                reason="shutdown",
            )
        for producer in ending:
            await self.store_end(producer)
