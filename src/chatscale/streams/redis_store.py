"""The Redis side of one job, as data: its hash, its log, and idempotent reads of both.

Every read that several parts of the backend make (a subscriber, ``status``, a takeover)
goes through :class:`JobStore`, so there is one place that knows the key layout, how an
entry of a log is encoded, and how transient read failures are retried. The reads of
concurrent callers share round trips on one held connection per node
(:class:`~chatscale.redis.group.SharedCalls`): a thousand subscribers arriving at once (a
redeploy's reconnections) cost a few round trips, not a pool connection each.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError, ResponseError

from chatscale.redis.group import SharedCalls
from chatscale.redis.keys import KeySpace
from chatscale.redis.line import node_round_trip
from chatscale.redis.replication import WAIT_MS
from chatscale.redis.transient import TRANSIENT_REDIS_ERRORS
from chatscale.streams import codec
from chatscale.streams.metrics import StreamMetrics
from chatscale.streams.model import Event, JobStatus

log = logging.getLogger(__name__)

#: Log entries per XRANGE page (each entry holds at most STREAM_REPLAY_PAGE events).
_LOG_PAGE = 8
#: Transient read failures are retried this long, backing off from the first delay to the
#: longest one.
_READ_RETRY_S = 15.0
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0


@dataclass(slots=True)
class JobRecord:
    """A job hash as read from Redis."""

    job_id: str
    owner: str
    meta: dict[str, Any]
    instance: str
    status: JobStatus
    epoch: int
    #: Sequence number of the last stored event.
    seq: int
    created_at: float
    updated_at: float
    abort: bool
    #: The writer told the job's end (tell.lua): once a replica had it, or taken as stored
    #: without one.
    told: bool = False
    #: Created to be recorded when it ends, and not recorded yet (``set_recorder``).
    unrecorded: bool = False

    @classmethod
    def parse(cls, job_id: str, raw: dict[bytes, bytes]) -> JobRecord | None:
        """The record, or ``None`` for a missing (or unreadable) hash."""
        if not raw or b"owner" not in raw:
            return None
        get = raw.get
        try:
            return cls(
                job_id=job_id,
                owner=raw[b"owner"].decode(),
                meta=codec.loads(get(b"meta", b"{}")),
                instance=get(b"inst", b"").decode(),
                status=JobStatus(get(b"status", b"running").decode()),
                epoch=int(get(b"epoch", b"1")),
                seq=int(get(b"seq", b"0")),
                created_at=float(get(b"created", b"0")),
                updated_at=float(get(b"updated", b"0")),
                abort=b"abort" in raw,
                told=b"told" in raw,
                unrecorded=b"unrecorded" in raw,
            )
        except (ValueError, KeyError):
            log.warning("job %s has a corrupt hash; treating it as missing", job_id)
            return None


@dataclass(frozen=True, slots=True)
class Batch:
    """One log entry: events ``first..last`` as encoded items (what append.lua stores)."""

    first: int
    last: int
    items: bytes


class JobStore:
    """Reads of job hashes and logs, retried over transient failures."""

    def __init__(
        self, client: Any, keys: KeySpace, metrics: StreamMetrics, *, timeout_s: float
    ) -> None:
        self.client = client
        self.keys = keys
        self.metrics = metrics
        #: The hash and log reads; each round trip bounded by ``timeout_s``.
        self.calls = SharedCalls(client, timeout_s)
        self._job_reads: dict[str, asyncio.Future[Any]] = {}

    async def close(self) -> None:
        """Give the reads' connections back (reads still waiting fail)."""
        await self.calls.close()

    async def read(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """One read command, retried over transient failures for up to 15 s: a burst of
        subscribers exhausting the pool, or a reconnect, must not end a subscription that
        can simply wait (reads are idempotent)."""
        delay = _RETRY_FIRST_S
        deadline: float | None = None
        while True:
            try:
                result = await fn(*args, **kwargs)
            except TRANSIENT_REDIS_ERRORS:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + _READ_RETRY_S
                if now + delay > deadline:
                    raise
                self.metrics.read_retries += 1
                await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: no herd
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            self.metrics.redis_round_trips += 1
            return result

    async def job(self, job_id: str) -> JobRecord | None:
        """The job hash. Concurrent reads of one job (many subscribers re-reading it at
        once) share one round trip."""
        if not isinstance(job_id, str) or not job_id:
            return None
        pending = self._job_reads.get(job_id)
        if pending is None:
            key = self.keys.stream_job(job_id)
            pending = asyncio.ensure_future(self.read(self.calls.command, "HGETALL", key, key=key))
            self._job_reads[job_id] = pending
            pending.add_done_callback(lambda done: self._job_read_done(job_id, done))
        raw = await asyncio.shield(pending)
        return JobRecord.parse(job_id, fields_of(raw))

    def _job_read_done(self, job_id: str, done: asyncio.Future[Any]) -> None:
        if self._job_reads.get(job_id) is done:
            del self._job_reads[job_id]
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have gone

    async def replicated(self, wanted: int, key: Any) -> tuple[int, float]:
        """How many replicas have every write the master of ``key``'s slot took so far,
        and Redis's clock (``TIME`` then ``WAIT`` on one connection: Redis sets a client's
        wait offset to the master's after each of its commands, so the WAIT covers what
        other connections wrote before). ``(0, 0.0)`` when Redis could not be asked."""
        try:
            if isinstance(self.client, RedisCluster):
                (seconds, micros), count = await self._time_and_wait_on(key, wanted)
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.time()
                    pipe.execute_command("WAIT", wanted, WAIT_MS)
                    (seconds, micros), count = await pipe.execute()
        except TRANSIENT_REDIS_ERRORS:
            return 0, 0.0
        except ResponseError as exc:
            if isinstance(exc, NoPermissionError) or "unknown command" in str(exc).lower():
                # Not allowed to ask (an ACL without TIME or WAIT, a renamed command): as
                # if every replica had it, which is how the stream heartbeat treats a user
                # without INFO.
                return wanted, 0.0
            # Any other error reply says nothing of the replicas: the connection may be on
            # a demoted master ("WAIT cannot be used with replica instances"), whose
            # writes the new master may not have, or the slot may have moved.
            return 0, 0.0
        self.metrics.redis_round_trips += 1
        return int(count), int(seconds) + int(micros) / 1e6

    async def _time_and_wait_on(self, key: Any, wanted: int) -> tuple[Any, Any]:
        """On Cluster: ``TIME`` and ``WAIT`` pipelined on one connection of the master that
        serves ``key``'s slot (the client would send keyless commands to any node)."""
        now, count = await node_round_trip(
            self.client.get_node_from_key(key), [("TIME",), ("WAIT", wanted, WAIT_MS)]
        )
        for reply in (now, count):
            if isinstance(reply, ResponseError):
                raise reply
        return now, count

    async def batches(self, job_id: str, after: int = 0) -> AsyncIterator[list[Batch]]:
        """The log's entries holding events after ``after``, a page per round trip."""
        key = self.keys.stream_log(job_id)
        start = f"(0-{after}"
        while True:
            entries = await self.read(
                self.calls.command, "XRANGE", key, start, "+", "COUNT", _LOG_PAGE, key=key
            )
            if not entries:
                return
            page = []
            for entry_id, raw in entries:
                fields = fields_of(raw)
                last = int(entry_id.decode().partition("-")[2])
                page.append(Batch(int(fields[b"s"]), last, fields[b"e"]))
                start = "(" + entry_id.decode()
            yield page
            if len(entries) < _LOG_PAGE:
                return

    async def pages(self, job_id: str, after: int) -> AsyncIterator[list[Event]]:
        """Stored events with seq > ``after``, one non-empty page per round trip."""
        async for batches in self.batches(job_id, after):
            page: list[Event] = []
            for batch in batches:
                page.extend(events_of(batch, after))
                after = max(after, batch.last)
            if page:
                yield page

    async def events(self, job_id: str, after: int = 0, *, until: int | None = None) -> list[Event]:
        """Stored events with ``after`` < seq (<= ``until``)."""
        out: list[Event] = []
        async for page in self.pages(job_id, after):
            for event in page:
                if until is not None and int(event.id) > until:
                    return out
                out.append(event)
        return out


def fields_of(reply: Any) -> dict[bytes, bytes]:
    """A hash's (or a log entry's) fields and values: from a flat list, as Redis sends them
    in RESP2, or from the dict redis-py's reply callbacks make of them."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def events_of(batch: Batch, after: int = 0) -> list[Event]:
    """The events of a batch with seq > ``after``."""
    items = codec.loads(batch.items)
    first = batch.first
    skip = after + 1 - first
    if skip > 0:
        items = items[skip:]
        first += skip
    return codec.unpack(first, items)
