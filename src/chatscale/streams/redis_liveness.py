"""Liveness of the Redis backend: this instance's heartbeat, aborts addressed to it, and
the reaper that claims (epoch-fenced) and continues or ends the jobs of dead instances."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from chatscale.streams import codec
from chatscale.streams.fanout import Record
from chatscale.streams.model import FINAL_STATUS, Event, JobInfo, JobStatus
from chatscale.streams.producer import Producer
from chatscale.streams.scripts import CLAIM
from chatscale.streams.state import JobRecord, Live

if TYPE_CHECKING:
    from chatscale.redis.keys import KeySpace
    from chatscale.streams.base import StreamManager
    from chatscale.streams.metrics import StreamMetrics
    from chatscale.streams.runner import Continuation, ProducerStep

log = logging.getLogger(__name__)

#: An instance log expires twice this long after its instance stopped beating (its entries
#: are trimmed as soon as they are archived, see ``RedisWriteSide._ilog_floor``).
ILOG_WINDOW_MS = 60_000


class RedisLiveness:
    """Heartbeat, control messages, reaper and takeover (mixed into the manager)."""

    client: Any
    keys: KeySpace
    metrics: StreamMetrics
    instance_id: str
    lease_s: float
    takeover: bool
    running_ttl: int
    _live: dict[str, Live]
    _ilog: str
    _ictl: str
    _ijobs: str
    _last_ilog_id: str
    _claiming: set[str]
    _beating: bool
    _closed: bool
    _draining: bool
    _continuation: Continuation | None

    if TYPE_CHECKING:

        def _ilog_floor(self) -> str: ...

        def _adopt(
            self, producer: Producer, events: list[Event], archived: int, tail: str
        ) -> Live: ...

        async def _archive(self, live: Live) -> None: ...

        async def _finished(self, producer: Producer) -> None: ...

        async def _read_archive(
            self, job_id: str, after: int, *, until: int | None = None
        ) -> list[Event]: ...

        def _ilog_entries(
            self, key: str, start: str, end: str = "+", *, job_id: str
        ) -> AsyncIterator[tuple[str, list[Record]]]: ...

        def run(
            self, producer: Producer, steps: AsyncIterator[ProducerStep | str]
        ) -> asyncio.Task[Any]: ...

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
        log.info(
            "took job %s over from instance %s at event %d (epoch %s)", job_id, dead, seq, epoch
        )
        # The dead owner may have published its final event without archiving it: some
        # subscribers already ended with it, so it stands.
        ended = events[-1] if events and events[-1].final else None
        text = "".join(str(e.data["text"]) for e in events if e.type == "delta")
        size = sum(len(str(e.data["text"]).encode()) for e in events if e.type == "delta")
        producer = Producer(
            cast("StreamManager", self),  # a mixin of the manager, never used alone
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

    async def _is_dead(self, instance: str) -> bool:
        score = await self.client.zscore(self.keys.stream_instances, instance)
        return score is None or score < (time.time() - self.lease_s) * 1000
