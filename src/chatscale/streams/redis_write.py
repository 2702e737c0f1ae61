"""The write side of the Redis backend: the writer (one instance-log entry per coalescing
window for every running job of this instance) and the archiver (each job's events into its
own archive about once a second and at its end, fenced by the job's epoch)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from chatscale.streams import codec
from chatscale.streams.fanout import Record
from chatscale.streams.model import FINAL_STATUS
from chatscale.streams.scripts import ARCHIVE, CREATE
from chatscale.streams.state import Live

if TYPE_CHECKING:
    from chatscale.redis.keys import KeySpace
    from chatscale.redis.lane import Lane
    from chatscale.streams.metrics import StreamMetrics
    from chatscale.streams.producer import Producer

log = logging.getLogger(__name__)

#: A running job's events reach its archive at least this often.
ARCHIVE_INTERVAL_S = 1.0
ARCHIVER_TICK_S = 0.05
_ARCHIVE_BATCH = 256
_END_ROUNDS = 64
#: How long a job taken over from this instance keeps its instance-log entries (and the
#: new owner's marker after them) from being trimmed.
FENCED_HOLD_MS = 60_000


class RedisWriteSide:
    """The writer and the archiver of the Redis backend (mixed into the manager)."""

    client: Any
    keys: KeySpace
    metrics: StreamMetrics
    instance_id: str
    running_ttl: int
    finished_ttl: int
    replay_page: int
    stall_s: float
    _live: dict[str, Live]
    _producers: dict[str, Producer]
    _dirty: list[Producer]
    _buffered: int
    _lane: Lane | None
    _floor: str | None
    _last_ilog_id: str
    _ilog: str
    _ijobs: str
    _kick: asyncio.Event
    _kick_handle: asyncio.TimerHandle | None
    _flushed: asyncio.Future[None] | None
    _closed: bool
    _background: set[asyncio.Task[Any]]
    #: Jobs taken over from this instance: their last stored tail and until when it holds
    #: the trim floor (``time.monotonic``).
    _fenced: dict[str, tuple[str, float]]

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
            if not events or live is None or live.producer is not producer:
                continue  # ended, or a stale producer (see ``_adopt``): its events go nowhere
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
        if self._fenced:
            now = time.monotonic()
            for job_id, (stored_tail, until) in list(self._fenced.items()):
                if until < now:
                    del self._fenced[job_id]
                elif codec.id_key(stored_tail) < key:
                    floor, key = stored_tail, codec.id_key(stored_tail)
        self._floor = floor
        return floor

    async def _end(self, ending: list[tuple[Live, Record]]) -> None:
        """Store the jobs' ends in their archives (and status), then on the live path: who
        sees a final event also finds the job finished in Redis."""
        lives = [live for live, _ in ending]
        for _ in range(_END_ROUNDS):
            pending = [
                live
                for live in lives
                if live.archived < live.producer.seq
                and self._live.get(live.producer.job_id) is live  # not fenced meanwhile
            ]
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
            await asyncio.sleep(ARCHIVER_TICK_S)
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
            if self._fence(live):
                self._spawn(self._srem(self._ijobs, producer.job_id))
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

    def _fence(self, live: Live) -> bool:
        """Stop a producer whose job another instance (or a newer producer here) now owns;
        whether it was this instance's current producer of the job.

        The new owner marked the move in our log, after what it took over; what we wrote
        since (a zombie's output) follows the marker. A lagging reader must still meet the
        marker before that output: trimming past it would hand it the zombie's events as if
        they were the job's. So the job's last tail keeps holding the trim floor back for a
        while.
        """
        producer = live.producer
        producer.closed = True
        producer.end_reason = "taken_over"
        producer.aborted.set()
        if live.done is not None and not live.done.done():
            live.done.set_result(None)
        job_id = producer.job_id
        self._fenced[job_id] = (live.stored_tail, time.monotonic() + FENCED_HOLD_MS / 1000)
        if self._live.get(job_id) is not live:
            return False
        del self._live[job_id]
        self.metrics.jobs_active -= 1
        if self._producers.get(job_id) is producer:
            del self._producers[job_id]
        return True

    def _forget(self, live: Live) -> None:
        if live.done is not None and not live.done.done():
            live.done.set_result(None)
        job_id = live.producer.job_id
        if self._live.get(job_id) is not live:
            return  # a stale producer of a job this instance has taken over again since
        del self._live[job_id]
        self.metrics.jobs_active -= 1
        self._producers.pop(job_id, None)
        self._spawn(self._srem(self._ijobs, job_id))

    async def _srem(self, key: str, member: str) -> None:
        with contextlib.suppress(Exception):
            await self.client.srem(key, member)
