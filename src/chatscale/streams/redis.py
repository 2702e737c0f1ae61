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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from chatscale.redis.lane import Lane
from chatscale.streams import codec
from chatscale.streams.base import StreamManager, check_job_id, check_owner
from chatscale.streams.errors import (
    InvalidEvent,
    JobExists,
    JobNotFound,
)
from chatscale.streams.fanout import LogReader, Record
from chatscale.streams.model import (
    FINAL_STATUS,
    Event,
    JobInfo,
    JobStatus,
)
from chatscale.streams.producer import Producer
from chatscale.streams.redis_read import RedisReadSide
from chatscale.streams.scripts import ARCHIVE, CLAIM, CREATE
from chatscale.streams.state import JobRecord, Live
from chatscale.streams.tasks import stop_task

if TYPE_CHECKING:
    from chatscale.config import Settings
    from chatscale.redis import RedisConnection

log = logging.getLogger(__name__)

#: A running job's events reach its archive at least this often.
ARCHIVE_INTERVAL_S = 1.0
#: An instance log expires twice this long after its instance stopped beating (its entries
#: are trimmed as soon as they are archived, see ``_ilog_floor``).
ILOG_WINDOW_MS = 60_000
_ABORT_POLL_S = 0.05
_ARCHIVER_TICK_S = 0.05
_ARCHIVE_BATCH = 256
_END_ROUNDS = 64


class RedisStreamManager(RedisReadSide, StreamManager):
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
        plain = isinstance(redis.client, Redis)
        self.lane_timeout_s: float | None = socket_timeout if plain else None
        self._lane = Lane(redis.client, socket_timeout) if isinstance(redis.client, Redis) else None
        self._ilog = self.keys.stream_ilog(self.instance_id)
        self._ictl = self.keys.stream_ictl(self.instance_id)
        self._ijobs = self.keys.stream_instance_jobs(self.instance_id)
        self._live: dict[str, Live] = {}
        self._readers: dict[str, LogReader] = {}
        self._listeners: dict[str, int] = {}
        self._job_reads: dict[str, asyncio.Future[Any]] = {}
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
        self._check_open()
        check_owner(owner)
        if meta is not None and not isinstance(meta, dict):
            raise InvalidEvent("meta must be a JSON object (dict)")
        try:
            meta_json = codec.dumps(meta or {})
        except (TypeError, ValueError) as exc:
            raise InvalidEvent(f"meta is not JSON: {exc}") from exc
        job_id = check_job_id(job_id) if job_id is not None else uuid.uuid4().hex
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
        live = Live(producer, events, archived, time.monotonic(), tail, tail)
        self._live[producer.job_id] = live
        self._producers[producer.job_id] = producer
        self.metrics.jobs_active += 1
        return live

    def _mark_dirty(self, producer: Producer) -> None:
        if not self._dirty:
            self._buffered_since = time.monotonic()
        self._dirty.append(producer)
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

    async def _finished(self, producer: Producer) -> None:
        live = self._live.get(producer.job_id)
        if live is None:
            return
        if live.done is None:
            live.done = asyncio.get_running_loop().create_future()
        self._kick.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(5.0, 3 * self.lease_s)):
                await asyncio.shield(live.done)

    # --- the writer and the archiver ----------------------------------------------------
    async def _writer(self) -> None:
        while not self._closed:
            await self._kick.wait()
            self._kick.clear()
            if self._kick_handle is not None:
                self._kick_handle.cancel()
                self._kick_handle = None
            try:
                await self._flush_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream writer: %s; retrying", exc)
                await asyncio.sleep(0.1)

    async def _flush_once(self) -> None:
        waiter, self._flushed = self._flushed, None
        try:
            await self._write_batch()
        finally:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _write_batch(self) -> None:
        """Hand every job's new events to the instance log, in one entry."""
        dirty, self._dirty = self._dirty, []
        self._buffered = 0
        records: list[Record] = []
        written: list[Live] = []
        ending: list[tuple[Live, Record]] = []
        now = time.monotonic()
        for producer in dirty:
            events = producer._take()
            live = self._live.get(producer.job_id)
            if not events or live is None:
                continue
            live.events.extend(events)
            live.touched = now
            record = [
                producer.job_id,
                producer.epoch,
                int(events[0].id),
                codec.pack(events, final_text=False),
            ]
            if producer.closed:
                ending.append((live, record))
            else:
                records.append(record)
                written.append(live)
        if ending:
            self._spawn(self._end(ending))
        if records:
            await self._append_ilog(records, written)

    async def _append_ilog(self, records: list[Record], lives: list[Live]) -> None:
        # MINID trims what every running job has archived; the floor is refreshed by the
        # archiver (a stale one is smaller: it trims less, never too much).
        payload = codec.dumps(records)
        if self._lane is None or self._lane.busy:  # busy: an ending job's write meanwhile
            entry_id = await self.client.xadd(
                self._ilog, {"d": payload}, minid=self._floor, approximate=False
            )
        else:
            trim = ("MINID", self._floor) if self._floor else ()
            entry_id = await self._lane.execute("XADD", self._ilog, *trim, "*", "d", payload)
        self.metrics.redis_round_trips += 1
        self._last_ilog_id = entry_id.decode()
        for live in lives:
            live.tail = self._last_ilog_id

    def _ilog_floor(self) -> str:
        """The oldest instance-log id still needed: the smallest tail recorded for a running
        job (everything before it is archived). Older entries are trimmed at once, so the
        instance log holds about a second of text, not a window of every job's history."""
        floor = self._last_ilog_id
        key = codec.id_key(floor)
        for live in self._live.values():
            tail = codec.id_key(live.stored_tail)
            if tail < key:
                floor, key = live.stored_tail, tail
        self._floor = floor
        return floor

    async def _end(self, ending: list[tuple[Live, Record]]) -> None:
        """Store the jobs' ends in their archives (and status), then on the live path: who
        sees a final event also finds the job finished in Redis."""
        lives = [live for live, _ in ending]
        for _ in range(_END_ROUNDS):
            pending = [live for live in lives if live.archived < live.producer.seq]
            if not pending:
                break
            await self._archive_many(pending)
        self._ilog_floor()  # the ended jobs no longer hold the instance log back
        try:
            await self._append_ilog([record for _, record in ending], [])
        except Exception as exc:  # followers re-read the archive when they idle
            log.warning("stream writer: %s", exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _archiver(self) -> None:
        """Archive every running job's recent events about once a second, retry failures."""
        while not self._closed:
            await asyncio.sleep(_ARCHIVER_TICK_S)
            try:
                await self._archive_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream archiver: %s; retrying", exc)

    async def _archive_due(self) -> None:
        now = time.monotonic()
        due: list[Live] = []
        for live in list(self._live.values()):
            producer = live.producer
            if live.busy:
                continue
            if producer.seq > live.archived and (
                producer.closed or now - live.archive_at >= ARCHIVE_INTERVAL_S
            ):
                if not producer.closed or not producer._dirty:
                    due.append(live)
            elif not producer.closed and now - live.touched > self.stall_s:
                producer.close_with(
                    "error",
                    {"message": "the response stalled (no output for STREAM_RUNNING_TTL)"},
                    reason="stalled",
                )
        for i in range(0, len(due), _ARCHIVE_BATCH):
            await self._archive_many(due[i : i + _ARCHIVE_BATCH])
        if due:
            self._ilog_floor()

    async def _archive(self, live: Live) -> None:
        """Archive one job's unarchived events now (one fenced script call)."""
        await self._archive_many([live])

    async def _archive_many(self, lives: list[Live]) -> None:
        """Archive the unarchived events of several jobs in one pipelined round trip."""
        calls: list[tuple[Live, list[str], list[Any]]] = []
        for live in lives:
            if live.busy:
                continue
            call = self._archive_call(live)
            if call is not None:
                live.busy = True
                calls.append((live, *call))
        if not calls:
            return
        try:
            replies: list[Any]
            if len(calls) == 1:
                live, keys, args = calls[0]
                replies = [await ARCHIVE(self.client, keys, args)]
            elif isinstance(self.client, RedisCluster):
                # redis-py's Cluster pipeline does not run EVALSHA: a final archive call
                # that went through it never landed and left jobs "running". Concurrent
                # calls still share the event loop's round trips.
                replies = list(
                    await asyncio.gather(
                        *(ARCHIVE(self.client, keys, args) for _, keys, args in calls),
                        return_exceptions=True,
                    )
                )
            else:
                pipe = self.client.pipeline(transaction=False)
                for _, keys, args in calls:
                    pipe.evalsha(ARCHIVE.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
            self.metrics.redis_round_trips += 1
            for (live, keys, args), reply in zip(calls, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    reply = await ARCHIVE(self.client, keys, args)  # loads it for next time
                if isinstance(reply, Exception):
                    log.warning("archiving job %s: %s", live.producer.job_id, reply)
                    continue
                await self._archived(live, reply, args)
        finally:
            for live, _, _ in calls:
                live.busy = False

    def _archive_call(self, live: Live) -> tuple[list[str], list[Any]] | None:
        producer = live.producer
        first = live.archived + 1
        # One archive entry holds at most STREAM_REPLAY_PAGE events: a replay page.
        events = live.events[first - 1 : first - 1 + self.replay_page]
        if not events:
            return None
        last = events[-1]
        status = FINAL_STATUS[last.type].value if last.final else ""
        ttl = self.finished_ttl if status else self.running_ttl
        job_id = producer.job_id
        payload = codec.dumps(codec.pack(events, final_text=False))
        keys = [self.keys.stream_job(job_id), self.keys.stream_log(job_id)]
        return keys, [producer.epoch, first, last.id, payload, live.tail, status, time.time(), ttl]

    async def _archived(self, live: Live, reply: Any, args: list[Any]) -> None:
        producer = live.producer
        code, archived = int(reply[0]), int(reply[1])
        live.archive_at = time.monotonic()
        if code == -1:
            await self._recreate(live, args[5], args[7])
        elif code == -2:
            log.warning("job %s was taken over by another instance", producer.job_id)
            producer.closed = True
            producer.end_reason = "taken_over"
            producer.aborted.set()
            self._forget(live)
            return
        elif code == -3:
            # Redis lost the archive's tail (failover / restart): resend from there.
            self.metrics.reconciled_events += len(live.events) - archived
            live.archived = archived
            live.archive_at = 0.0
            return
        else:
            live.archived = archived
            live.stored_tail = args[4]
        if producer.closed and live.archived >= producer.seq:
            self._forget(live)
            self.metrics.jobs_finished += 1

    async def _recreate(self, live: Live, status: str, ttl: int) -> None:
        """The job hash is gone although the job runs: Redis lost it; write it all again."""
        producer = live.producer
        log.warning(
            "job %s vanished from Redis; rewriting its %d events", producer.job_id, len(live.events)
        )
        payload = codec.dumps(codec.pack(live.events, final_text=False))
        await CREATE(
            self.client,
            [self.keys.stream_job(producer.job_id), self.keys.stream_log(producer.job_id)],
            [
                producer.owner,
                codec.dumps(producer.meta),
                self.instance_id,
                producer.created_at,
                ttl,
                producer.epoch,
                len(live.events),
                payload,
                1,
                live.tail,
                time.time(),
                status or "running",
            ],
        )
        self.metrics.redis_round_trips += 1
        self.metrics.reconciled_events += len(live.events)
        live.archived = len(live.events)
        live.stored_tail = live.tail

    def _forget(self, live: Live) -> None:
        if live.done is not None and not live.done.done():
            live.done.set_result(None)
        job_id = live.producer.job_id
        if self._live.pop(job_id, None) is not None:
            self.metrics.jobs_active -= 1
        self._producers.pop(job_id, None)
        self._spawn(self._srem(self._ijobs, job_id))

    async def _srem(self, key: str, member: str) -> None:
        with contextlib.suppress(Exception):
            await self.client.srem(key, member)

    # --- control: aborts addressed to this instance -------------------------------------
    async def _on_control(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        job_id = fields.get(b"abort", b"").decode()
        live = self._live.get(job_id)
        if live is None or live.producer.closed:
            return
        self.metrics.aborts += 1
        live.producer.close_with("aborted", {}, reason="aborted")

    # --- liveness: heartbeat, reaper, takeover ------------------------------------------
    async def _beat(self) -> None:
        now_ms = int(time.time() * 1000)
        await asyncio.gather(
            self.client.zadd(self.keys.stream_instances, {self.instance_id: now_ms}),
            self.client.xtrim(self._ilog, minid=self._ilog_floor(), approximate=False),
            self.client.pexpire(self._ilog, ILOG_WINDOW_MS * 2),
            self.client.pexpire(self._ictl, ILOG_WINDOW_MS * 2),
        )
        self.metrics.redis_round_trips += 1

    async def _heartbeat(self) -> None:
        period = self.lease_s / 3
        while not self._closed:
            await asyncio.sleep(period)
            try:
                if self._beating:
                    await self._beat()
                await self._reap()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream heartbeat / reaper: %s", exc)

    async def _reap(self) -> None:
        if self._draining:
            return
        cutoff = int((time.time() - self.lease_s) * 1000)
        dead = await self.client.zrangebyscore(self.keys.stream_instances, "-inf", cutoff)
        for raw in dead:
            instance = raw.decode()
            if instance == self.instance_id:
                continue
            jobs_key = self.keys.stream_instance_jobs(instance)
            jobs = await self.client.smembers(jobs_key)
            for job in jobs:
                await self._take_over(instance, job.decode())
            if not await self.client.scard(jobs_key):
                await self.client.zrem(self.keys.stream_instances, instance)
        # Self-healing: a job listed as ours that we do not produce (a takeover interrupted
        # by an error, or a restart under the same instance id) is claimed again.
        for raw in await self.client.smembers(self._ijobs):
            job_id = raw.decode()
            if job_id not in self._live and job_id not in self._claiming:
                await self._take_over(self.instance_id, job_id)

    async def _take_over(self, dead: str, job_id: str, *, abort: bool = False) -> Producer | None:
        """Claim ``job_id`` from the stopped instance ``dead`` and continue or end it."""
        if job_id in self._claiming:
            return None
        self._claiming.add(job_id)
        try:
            return await self._claim(dead, job_id, abort=abort)
        finally:
            self._claiming.discard(job_id)

    async def _claim(self, dead: str, job_id: str, *, abort: bool) -> Producer | None:
        job_key = self.keys.stream_job(job_id)
        # Listed as ours first: if anything below fails, our reaper claims it again.
        await self.client.sadd(self._ijobs, job_id)
        epoch = await CLAIM(
            self.client, [job_key], [dead, "", self.instance_id, time.time(), self.running_ttl]
        )
        if dead != self.instance_id:
            await self.client.srem(self.keys.stream_instance_jobs(dead), job_id)
        if not epoch:
            current = JobRecord.parse(job_id, await self.client.hgetall(job_key))
            if (
                current is None
                or current.instance != self.instance_id
                or current.status is not JobStatus.RUNNING
            ):
                await self.client.srem(self._ijobs, job_id)
            return None
        self.metrics.takeovers += 1
        job = JobRecord.parse(job_id, await self.client.hgetall(job_key))
        if job is None:
            return None
        # Mark the move in the old instance log first: its followers stop reading it at
        # the marker, so exactly the events before the marker are the job's events.
        old_log = self.keys.stream_ilog(dead)
        marker = await self.client.xadd(
            old_log, {"d": codec.dumps([[job_id, int(epoch), -1, self.instance_id]])}
        )
        await self.client.pexpire(old_log, ILOG_WINDOW_MS * 2)
        events = await self._read_archive(job_id, 0)
        seq = len(events)
        async for _, entry in self._ilog_entries(old_log, job.tail, marker.decode(), job_id=job_id):
            for record in entry:
                if record[0] != job_id or record[2] < 0 or record[1] != int(epoch) - 1:
                    continue
                for event in codec.unpack(record[2], record[3]):
                    if int(event.id) == seq + 1:
                        events.append(event)
                        seq += 1
        # The dead owner may have published its final event without archiving it: some
        # subscribers already ended with it, so it stands.
        ended = events[-1] if events and events[-1].final else None
        text = "".join(str(e.data["text"]) for e in events if e.type == "delta")
        size = sum(len(str(e.data["text"]).encode()) for e in events if e.type == "delta")
        producer = Producer(
            self,
            job_id,
            job.owner,
            job.meta,
            created_at=job.created_at,
            seq=seq,
            text=text,
            size=size,
            epoch=int(epoch),
        )
        live = self._adopt(producer, events, job.archived, self._last_ilog_id)
        if ended is not None:
            producer.closed = True
            producer.status = FINAL_STATUS[ended.type]
            producer.end_reason = ended.type
        await self._archive(live)
        if ended is not None:
            await self._finished(producer)
            return producer
        if abort:
            producer.close_with("aborted", {}, reason="aborted")
        elif self.takeover and self._continuation is not None and not self._draining:
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
            await self._finished(producer)
        return producer

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
                await asyncio.sleep(_ARCHIVER_TICK_S)
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

    async def _is_dead(self, instance: str) -> bool:
        score = await self.client.zscore(self.keys.stream_instances, instance)
        return score is None or score < (time.time() - self.lease_s) * 1000
