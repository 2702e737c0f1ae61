"""Resumable streams on Redis: many instances, any topology (standalone, Cluster, Sentinel).

Write path: every coalescing window an instance appends ONE entry to its instance log
(``P::ilog:{<instance>}:log``) carrying the new events of all its running jobs, and about
once a second per running job (and at once when it ends) one fenced Lua call appends the
job's recent events to its archive (``P::stream:{<id>}:log``, entry ids ``0-<last seq>``)
and records in the job hash how far the archive goes and where in the instance log the
rest can be found. Read path: a subscriber reads the job hash, replays the archive after
its position (paged), then follows the owner's instance log through the process's shared
reader, dropping what it already has; a gap makes it re-read from the archive.

Liveness: each instance beats in a ZSET; every instance reaps the jobs of instances whose
beat is older than STREAM_LEASE_TTL, claiming each with an epoch bump (only one wins; the
old owner's archive writes are refused from then on), and continues or ends them.
See docs/streams.md for the guarantees and their limits.

Layout: this module holds the manager's lifecycle, ``create``, ``abort`` and ``drain``; its
mixins hold the writer and archiver (``redis_write``), the heartbeat, reaper and takeover
(``redis_liveness``) and the subscriptions (``redis_read``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from chatscale.redis.lane import Lane
from chatscale.streams import codec
from chatscale.streams.base import StreamManager
from chatscale.streams.errors import (
    InvalidEvent,
    JobExists,
    JobNotFound,
)
from chatscale.streams.fanout import LogReader, Record
from chatscale.streams.model import (
    Event,
    JobStatus,
)
from chatscale.streams.producer import Producer
from chatscale.streams.redis_liveness import RedisLiveness
from chatscale.streams.redis_read import RedisReadSide
from chatscale.streams.redis_write import ARCHIVER_TICK_S, RedisWriteSide
from chatscale.streams.scripts import CREATE
from chatscale.streams.state import Live
from chatscale.streams.tasks import stop_task

if TYPE_CHECKING:
    from chatscale.config import Settings
    from chatscale.redis import RedisConnection

log = logging.getLogger(__name__)

_ABORT_POLL_S = 0.05


class RedisStreamManager(RedisWriteSide, RedisLiveness, RedisReadSide, StreamManager):
    """The multi-instance backend (``USE_REDIS_STREAMS=true``)."""

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
        socket_timeout = redis.config.socket_timeout_s
        # A blocking read must return before the socket timeout fires (see REFERENCE).
        self.block_ms = max(50, min(1_000, int(socket_timeout * 1000) - 500))
        #: Hot loops (the writer, log readers) hold a connection of their own, except on
        #: Cluster, whose client routes every command itself.
        client = redis.client
        self._lane = Lane(client, socket_timeout) if isinstance(client, Redis) else None
        self.lane_timeout_s: float | None = None if self._lane is None else socket_timeout
        self._ilog = self.keys.stream_ilog(self.instance_id)
        self._ictl = self.keys.stream_ictl(self.instance_id)
        self._ijobs = self.keys.stream_instance_jobs(self.instance_id)
        self._live: dict[str, Live] = {}
        self._readers: dict[str, LogReader] = {}
        self._listeners: dict[str, int] = {}
        self._job_reads: dict[str, asyncio.Future[Any]] = {}
        self._fenced: dict[str, tuple[str, float]] = {}
        self._kick = asyncio.Event()
        self._kick_handle: asyncio.TimerHandle | None = None
        self._flushed: asyncio.Future[None] | None = None
        self._last_ilog_id = "0-0"
        #: MINID of the next instance-log write (None: trim nothing).
        self._floor: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._claiming: set[str] = set()
        self._unregister_ping: Any = None
        self._started = False
        self._beating = True

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the writer, the heartbeat / reaper and this instance's log reader."""
        if self._started:
            return
        self._started = True
        last = await self.client.xrevrange(self._ilog, count=1)
        if last:
            self._last_ilog_id = last[0][0].decode()
        await self._beat()
        loop = asyncio.get_running_loop()
        own = LogReader(
            self.client,
            self._ilog,
            cursor=self._last_ilog_id,
            block_ms=self.block_ms,
            metrics=self.metrics,
            control=(self._ictl, self._on_control),
            idle_s=max(0.5, self.lease_s / 2),
            lane_timeout_s=self.lane_timeout_s,
            on_move=self._on_move,
        )
        self._readers[self.instance_id] = own
        own.task = loop.create_task(own._run())
        self._tasks = [
            loop.create_task(self._writer()),
            loop.create_task(self._archiver()),
            loop.create_task(self._heartbeat()),
        ]
        self._unregister_ping = self.redis.keepalive.register(self.client.ping)

    async def close(self) -> None:
        """Write what is buffered, then stop every task (running jobs are left as they are;
        call :meth:`drain` first to hand them over)."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._flush_once()
        if self._unregister_ping is not None:
            self._unregister_ping()
        await self._cancel_runs()
        if self._background:
            await asyncio.wait(self._background, timeout=2)
        for task in list(self._background):
            await stop_task(task)
        for task in self._tasks:
            await stop_task(task)
        if self._lane is not None:
            await self._lane.close()
        for reader in list(self._readers.values()):
            await reader.stop()
        self._readers.clear()
        for live in self._live.values():
            live.producer.closed = True
            live.producer.aborted.set()
        if self._kick_handle is not None:
            self._kick_handle.cancel()

    # --- producer side ------------------------------------------------------------------
    async def create(
        self, *, owner: str, meta: dict[str, Any] | None = None, job_id: str | None = None
    ) -> Producer:
        """Register a new running job (in Redis) and return its producer."""
        job_id = self._check_create(owner, meta, job_id)
        try:
            meta_json = codec.dumps(meta or {})
        except (TypeError, ValueError) as exc:
            raise InvalidEvent(f"meta is not JSON: {exc}") from exc
        now = time.time()
        tail = self._last_ilog_id
        created = await CREATE(
            self.client,
            [self.keys.stream_job(job_id), self.keys.stream_log(job_id)],
            [
                owner,
                meta_json,
                self.instance_id,
                now,
                self.running_ttl,
                1,
                0,
                "",
                0,
                tail,
                now,
                "running",
            ],
        )
        if not created:
            raise JobExists(job_id)
        producer = Producer(self, job_id, owner, dict(meta or {}), created_at=now)
        self._adopt(producer, [], 0, tail)
        user_jobs = self.keys.user_jobs(owner)
        await asyncio.gather(
            self.client.sadd(self._ijobs, job_id),
            self.client.zadd(user_jobs, {job_id: now}),
            self.client.expire(user_jobs, self.running_ttl + self.finished_ttl),
        )
        self.metrics.redis_round_trips += 2
        self.metrics.jobs_created += 1
        return producer

    def _adopt(self, producer: Producer, events: list[Event], archived: int, tail: str) -> Live:
        stale = self._live.get(producer.job_id)
        if stale is not None:
            # This instance takes back a job it still produces with an older epoch (it was
            # thought dead, taken over, and the job came back to it before its old producer
            # learnt it was fenced). The old producer must stop at once, and nothing it
            # numbered may reach the new producer's events: that would renumber the log.
            self._fence(stale)
        live = Live(producer, events, archived, time.monotonic(), tail, tail)
        self._live[producer.job_id] = live
        self._producers[producer.job_id] = producer
        self.metrics.jobs_active += 1
        return live

    def _schedule_flush(self) -> None:
        if self._kick.is_set() or self._kick_handle is not None:
            return
        if self.coalesce_s > 0:
            self._kick_handle = asyncio.get_running_loop().call_later(self.coalesce_s, self._fire)
        else:
            self._kick.set()

    def _fire(self) -> None:
        self._kick_handle = None
        self._kick.set()

    def _next_flush(self) -> asyncio.Future[None]:
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
        return self._flushed

    async def _relieve(self) -> None:
        waiter = self._next_flush()
        self._kick.set()
        # Shielded: every waiting producer shares this future; one cancelled producer must
        # not cancel the others' wait.
        await asyncio.shield(waiter)

    def _on_move(self, record: Record) -> None:
        """Another instance took one of our jobs (its marker is in our log): stop its
        producer now rather than at the next archive write, which comes up to a second
        later (the provider call is cancelled; nothing more is written for the job)."""
        job_id, epoch = record[0], record[1]
        live = self._live.get(job_id)
        if live is None or epoch <= live.producer.epoch:
            return
        log.warning("job %s was taken over by instance %s", job_id, record[3])
        self._fence(live)

    async def _finished(self, producer: Producer) -> None:
        live = self._live.get(producer.job_id)
        if live is None or live.producer is not producer:
            return
        if live.done is None:
            live.done = asyncio.get_running_loop().create_future()
        self._kick.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(5.0, 3 * self.lease_s)):
                await asyncio.shield(live.done)

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - public API
        """Hand running jobs over to other instances (takeover on and another instance
        alive), or let them finish within ``timeout`` and end the rest with ``error``."""
        self._draining = True
        others = []
        if self.takeover:
            cutoff = int((time.time() - self.lease_s) * 1000)
            others = [
                i
                for i in await self.client.zrangebyscore(self.keys.stream_instances, cutoff, "+inf")
                if i.decode() != self.instance_id
            ]
        if others and self._live:
            # Hand over: stop producing, store everything, then stop beating so the other
            # instances' reapers claim the jobs at their next round.
            for live in self._live.values():
                live.producer.aborted.set()
            await self._cancel_runs()
            for live in list(self._live.values()):
                live.events.extend(live.producer._take())
                live.archive_at = 0.0
            self._kick.set()
            deadline = time.monotonic() + max(0.5, timeout)
            while any(lv.archived < lv.producer.seq for lv in self._live.values()):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(ARCHIVER_TICK_S)
            for live in self._live.values():
                live.producer.closed = True
            self._beating = False
            await self.client.zadd(self.keys.stream_instances, {self.instance_id: 0})
            return
        deadline = time.monotonic() + max(0.0, timeout)
        while self._live and time.monotonic() < deadline:  # noqa: ASYNC110 - any end counts
            await asyncio.sleep(0.05)
        for live in list(self._live.values()):
            live.producer.close_with(
                "error",
                {"message": "the server shut down before the response was complete"},
                reason="shutdown",
            )
        for live in list(self._live.values()):
            await self._finished(live.producer)

    async def abort(self, job_id: str, *, owner: str | None = None, wait: float = 3.0) -> bool:
        """Ask the owning instance to stop the job; ``True`` once ``aborted`` is stored."""
        job = await self._job(job_id)
        if job is None or (owner is not None and owner != job.owner):
            raise JobNotFound(str(job_id))
        if job.status is not JobStatus.RUNNING:
            return False
        live = self._live.get(job_id)
        if job.instance == self.instance_id and live is not None:
            if live.producer.closed:
                return False
            self.metrics.aborts += 1
            live.producer.close_with("aborted", {}, reason="aborted")
            await self._finished(live.producer)
            return True
        await self.client.xadd(
            self.keys.stream_ictl(job.instance), {"abort": job_id}, maxlen=1000, approximate=True
        )
        deadline = time.monotonic() + max(0.0, wait)
        while time.monotonic() < deadline:
            await asyncio.sleep(_ABORT_POLL_S)
            current = await self._job(job_id)
            if current is None:
                return False
            if current.status is not JobStatus.RUNNING:
                return current.status is JobStatus.ABORTED
            if await self._is_dead(current.instance):
                self.metrics.aborts += 1
                taken = await self._take_over(current.instance, job_id, abort=True)
                return taken is not None and taken.status is JobStatus.ABORTED
        return False
