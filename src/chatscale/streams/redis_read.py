"""The read side of the Redis backend: replay a job's archive, then follow its owner's
instance log through the process's shared reader, delivering each event exactly once."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatscale.redis.keys import KeySpace
from chatscale.streams import codec
from chatscale.streams.errors import InvalidEventId, JobNotFound, TooManyListeners
from chatscale.streams.fanout import LogReader, Record, Subscription
from chatscale.streams.metrics import StreamMetrics
from chatscale.streams.model import FINAL_TYPES, Event, JobInfo, JobStatus, parse_event_id
from chatscale.streams.state import Follow, JobRecord

#: Archive entries per XRANGE page (each holds at most STREAM_REPLAY_PAGE events).
_ARCHIVE_PAGE = 1
_ILOG_PAGE = 512
#: How long a subscriber waits before re-reading after an unfillable gap.
_GAP_BACKOFF_S = 0.05
#: Transient read failures are retried this long, backing off from the first delay to
#: the longest one.
_READ_RETRY_S = 15.0
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0
#: How long a resume position beyond the log of a job that has moved is looked for again
#: before it is an error (the new owner stores what it took over within this).
_MOVED_RESUME_WAIT_S = 2.0
#: A silent subscription re-reads its job after 1, 2, 4... 16 idle checks of its reader.
_MAX_PATIENCE = 16


class RedisReadSide:
    """Subscriptions, status and listings of the Redis backend (mixed into the manager)."""

    client: Any
    keys: KeySpace
    metrics: StreamMetrics
    lease_s: float
    block_ms: int
    lane_timeout_s: float | None
    max_listeners: int
    subscriber_buffer: int
    _readers: dict[str, LogReader]
    _listeners: dict[str, int]
    _job_reads: dict[str, asyncio.Future[Any]]

    # --- subscriber side ----------------------------------------------------------------
    async def _read(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """One read command, retried over transient failures for up to _READ_RETRY_S: a
        burst of subscribers exhausting the pool, or a reconnect, must not end a
        subscription that can simply wait (reads are idempotent)."""
        delay = _RETRY_FIRST_S
        deadline: float | None = None
        while True:
            try:
                result = await fn(*args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError, TimeoutError):
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

    async def _job(self, job_id: str) -> JobRecord | None:
        """The job hash. Concurrent reads of one job (many subscribers re-reading it at
        once) share one round trip."""
        if not isinstance(job_id, str) or not job_id:
            return None
        pending = self._job_reads.get(job_id)
        if pending is None:
            pending = asyncio.ensure_future(
                self._read(self.client.hgetall, self.keys.stream_job(job_id))
            )
            self._job_reads[job_id] = pending
            pending.add_done_callback(lambda done: self._job_read_done(job_id, done))
        raw = await asyncio.shield(pending)
        return JobRecord.parse(job_id, raw)

    def _job_read_done(self, job_id: str, done: asyncio.Future[Any]) -> None:
        if self._job_reads.get(job_id) is done:
            del self._job_reads[job_id]
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have gone

    async def _read_archive(
        self, job_id: str, after: int, *, until: int | None = None
    ) -> list[Event]:
        """Archived events with seq > ``after`` (all pages)."""
        out: list[Event] = []
        async for page in self._archive_pages(job_id, after):
            for event in page:
                if until is not None and int(event.id) > until:
                    return out
                out.append(event)
        return out

    async def _archive_pages(self, job_id: str, after: int) -> AsyncIterator[list[Event]]:
        """Archived events with seq > ``after``, one non-empty page per round trip."""
        key = self.keys.stream_log(job_id)
        start = f"(0-{after}"
        while True:
            entries = await self._read(self.client.xrange, key, start, "+", count=_ARCHIVE_PAGE)
            if not entries:
                return
            page: list[Event] = []
            for entry_id, fields in entries:
                first = int(fields[b"s"])
                items = codec.loads(fields[b"e"])
                skip = after + 1 - first
                if skip > 0:
                    items = items[skip:]
                    first += skip
                if items:
                    page.extend(codec.unpack(first, items))
                    after = first + len(items) - 1
                start = "(" + entry_id.decode()
            if page:
                yield page
            if len(entries) < _ARCHIVE_PAGE:
                return

    async def _ilog_entries(
        self, key: str, start: str, end: str = "+", *, job_id: str
    ) -> AsyncIterator[tuple[str, list[Record]]]:
        """The records of ``job_id`` in an instance log between two ids (``(`` = exclusive),
        entry by entry, paged. Entries without the job are not even decoded."""
        needle = codec.dumps(job_id)
        while True:
            entries = await self._read(self.client.xrange, key, start, end, count=_ILOG_PAGE)
            for entry_id, fields in entries:
                start = "(" + entry_id.decode()
                payload = fields.get(b"d")
                records: list[Record] = []
                if payload is not None and needle in payload:
                    records = [r for r in codec.loads(payload) if r[0] == job_id]
                yield entry_id.decode(), records
            if len(entries) < _ILOG_PAGE:
                return

    def subscribe(
        self, job_id: str, *, after: str | None = None, owner: str | None = None
    ) -> AsyncIterator[Event]:
        """Replay the events after ``after`` from Redis, then follow live to the end."""
        return self._subscribe(job_id, after, owner)

    async def _subscribe(
        self, job_id: str, after: str | None, owner: str | None
    ) -> AsyncIterator[Event]:
        position = parse_event_id(str(job_id), after)
        if self._listeners.get(job_id, 0) >= self.max_listeners:
            raise TooManyListeners(job_id, self.max_listeners)
        # Counted before the first await, so concurrent subscribes cannot overshoot the cap.
        metrics = self.metrics
        self._listeners[job_id] = self._listeners.get(job_id, 0) + 1
        metrics.subscribers += 1
        try:
            job = await self._job(job_id)
            if job is None or (owner is not None and owner != job.owner):
                raise JobNotFound(str(job_id))
            state = Follow(job_id, position, job.epoch)
            first_pass = True
            while True:
                if job is None:
                    raise JobNotFound(job_id)
                state.epoch = max(state.epoch, job.epoch)
                before = state.last
                # 1. The archive after our position.
                if state.last < job.archived:
                    if first_pass:
                        metrics.replays += 1
                    texts = state.texts
                    async for page in self._archive_pages(job_id, state.last):
                        if int(page[0].id) != state.last + 1:
                            break  # cannot happen (pages are contiguous); re-read
                        metrics.events_delivered += len(page)
                        if first_pass:
                            metrics.replayed_events += len(page)
                        for event in page:
                            state.last += 1
                            kind = event.type
                            if kind == "delta":
                                texts.append(event.data["text"])
                            elif kind in FINAL_TYPES:
                                yield await self._with_text(state, event)
                                return
                            yield event
                if job.status is not JobStatus.RUNNING and state.last >= job.archived:
                    if first_pass and position > job.archived:
                        metrics.resume_misses += 1
                        raise InvalidEventId(
                            job_id, after, f"not in the log (its last event is {job.archived})"
                        )
                    return
                # 2. The live tail in the owner's instance log.
                async for event in self._follow(state, job, first_pass, after):
                    yield event
                    if event.final:
                        return
                if state.unconfirmed:  # nothing delivered yet: read the job again
                    state.unconfirmed = False
                    await asyncio.sleep(_GAP_BACKOFF_S)
                    job = await self._job(job_id)
                    continue
                first_pass = False
                # Silence re-reads the job less and less often (a job that thinks for a
                # minute must not cost its 10,000 subscribers a read every few seconds).
                quiet = state.last == before and not state.gaps
                state.patience = min(_MAX_PATIENCE, state.patience * 2) if quiet else 1
                if state.gaps:
                    await asyncio.sleep(_GAP_BACKOFF_S)
                job = await self._job(job_id)
        finally:
            self._listeners[job_id] -= 1
            if not self._listeners[job_id]:
                del self._listeners[job_id]
            metrics.subscribers -= 1

    async def _follow(
        self, state: Follow, job: JobRecord, first_pass: bool, after: str | None
    ) -> AsyncIterator[Event]:
        """Events of the owner's instance log until the end, a gap, a move or a timeout."""
        key = self.keys.stream_ilog(job.instance)
        # Join the shared reader first: it delivers every entry after its cursor. The entries
        # the job may have after its tail position but before that cursor are read once
        # with XRANGE (none for a reader created here, which starts at the tail). The entry
        # at the tail itself holds no unarchived event of the job.
        reader = self._readers.get(job.instance)
        if reader is None:
            reader = LogReader(
                self.client,
                key,
                cursor=job.tail,
                block_ms=self.block_ms,
                metrics=self.metrics,
                on_exit=self._reader_gone,
                idle_s=max(0.5, self.lease_s / 2),
                lane_timeout_s=self.lane_timeout_s,
            )
            self._readers[job.instance] = reader
        sub = Subscription(state.job_id, self.subscriber_buffer, state.patience)
        cursor = reader.add(sub)
        state.gaps = False
        # Resuming beyond the archive: read to the end now, to tell a bad id at once.
        validate = first_pass and state.position > job.archived
        try:
            records: list[Record] = []
            if validate or codec.id_key(cursor) > codec.id_key(job.tail):
                async for _, entry in self._ilog_entries(
                    key, "(" + job.tail, "+" if validate else cursor, job_id=state.job_id
                ):
                    records.extend(entry)
            for record in records:
                for event in state.accept(record):
                    if event is None:
                        return
                    if event.final:
                        yield await self._with_text(state, event)
                        return
                    yield event
            if first_pass and max(state.top, job.archived) < state.position:
                # Right after a takeover the new owner may not have stored what it took
                # over yet (the job hash already names it): a position from the old owner's
                # live events is then briefly beyond the log. Look again for a moment
                # before calling it an error (a browser gives up on a 400).
                if job.epoch > 1 and job.status is JobStatus.RUNNING:
                    now = time.monotonic()
                    if not state.confirm_by:
                        state.confirm_by = now + _MOVED_RESUME_WAIT_S
                    if now < state.confirm_by:
                        state.unconfirmed = True
                        return
                self.metrics.resume_misses += 1
                raise InvalidEventId(
                    state.job_id,
                    after,
                    f"not in the log (its last event is {max(state.top, job.archived)})",
                )
            if first_pass and state.position:
                self.metrics.resume_hits += 1
            while True:
                queued = sub.pop()
                if queued is None:
                    if sub.overflowed:
                        self.metrics.subscriber_overflows += 1
                        return
                    if sub.stale:
                        return  # nothing for a while: re-read the job (moved? ended?)
                    await sub.wait()
                    continue
                for event in state.accept(queued):
                    if event is None:
                        return
                    if event.final:
                        yield await self._with_text(state, event)
                        return
                    yield event
        finally:
            reader.remove(sub)

    def _reader_gone(self, reader: LogReader) -> None:
        for instance, known in list(self._readers.items()):
            if known is reader:
                del self._readers[instance]

    async def _with_text(self, state: Follow, event: Event) -> Event:
        """An archived final event with its ``text`` (stored once, as the deltas)."""
        if "text" in event.data:
            return event
        if state.position == 0:
            text = "".join(state.texts)
        else:
            prefix = await self._read_archive(state.job_id, 0, until=state.position)
            text = "".join(str(e.data["text"]) for e in prefix if e.type == "delta")
            text += "".join(state.texts)
        return Event(event.id, event.type, {"text": text, **event.data})

    async def status(self, job_id: str, *, owner: str | None = None) -> JobInfo | None:
        """The job's info and text so far (read from Redis), or ``None``."""
        job = await self._job(job_id)
        if job is None or (owner is not None and owner != job.owner):
            return None
        events = await self._read_archive(job_id, 0)
        if job.status is JobStatus.RUNNING:
            state = Follow(job_id, len(events), job.epoch)
            ilog = self.keys.stream_ilog(job.instance)
            async for _, entry in self._ilog_entries(ilog, job.tail, job_id=job_id):
                for record in entry:
                    if record[0] == job_id and record[2] >= 0:
                        events.extend(e for e in state.accept(record) if e is not None)
        text = "".join(str(e.data["text"]) for e in events if e.type == "delta")
        return JobInfo(
            job_id,
            job.owner,
            job.status,
            job.created_at,
            job.updated_at,
            job.meta,
            text,
            events[-1].id if events else None,
        )

    async def list_active(self, owner: str) -> list[JobInfo]:
        """The running jobs of ``owner``, oldest first (finished ones are pruned)."""
        key = self.keys.user_jobs(owner)
        ids = [i.decode() for i in await self.client.zrange(key, 0, -1)]
        jobs = await asyncio.gather(*(self._job(i) for i in ids))
        gone = [i for i, job in zip(ids, jobs, strict=True) if job is None]
        if gone:
            await self.client.zrem(key, *gone)
        return [
            JobInfo(j.job_id, j.owner, j.status, j.created_at, j.updated_at, j.meta, "", None)
            for j in jobs
            if j is not None and j.status is JobStatus.RUNNING
        ]
