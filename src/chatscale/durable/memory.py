"""The protocol in one process's memory (``USE_REDIS=false``): nothing survives a restart
and nothing is shared between instances."""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from dataclasses import dataclass, field

from chatscale.durable import rules
from chatscale.durable.content import encode_record
from chatscale.durable.errors import ProtocolError
from chatscale.durable.forks import (
    ForkKey,
    Inherited,
    check_fork_point,
    check_same,
    fork_key,
    fork_records,
    settle,
)
from chatscale.durable.model import (
    AppendRequest,
    CreateRequest,
    ReadResult,
    Record,
    StreamInfo,
    WriteResult,
    is_json,
    media_type,
)
from chatscale.durable.offsets import Offset, check_offset_bounds
from chatscale.durable.rules import (
    ProducerVerdict,
    check_content_type,
    check_producer,
    check_stream_seq,
)
from chatscale.durable.store import woken_or_timed_out

_SWEEP_EVERY_MS = 10_000


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Stream:
    id: str
    config: Inherited
    fork: ForkKey | None  # the creating PUT's fork headers, compared on an idempotent PUT
    source: str | None = None  # the stream this fork inherited from (holds a reference)
    #: Each append's bytes and message count, as plain tuples: the garbage collector stops
    #: tracking a tuple of bytes and an int, so the appends a store keeps cost its
    #: collections nothing (a Record each was a tenth of an append's CPU under load).
    records: list[tuple[bytes, int]] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    closed: bool = False
    last_seq: str | None = None
    producers: dict[str, tuple[int, int]] = field(default_factory=dict)
    refs: int = 0
    deleted: bool = False
    deadline_ms: int | None = None

    @property
    def tail(self) -> Offset:
        return Offset(len(self.records), self.ends[-1] if self.ends else 0)

    def info(self) -> StreamInfo:
        config = self.config
        return StreamInfo(
            self.id, config.content_type, config.ttl, config.expires_at, self.closed, self.tail
        )

    def touch(self, now_ms: int) -> None:
        # A sliding TTL: every read and write restarts it (HEAD does not).
        if self.config.ttl is not None:
            self.deadline_ms = now_ms + self.config.ttl * 1000

    def record(self, index: int) -> Record:
        data, messages = self.records[index]
        return Record(data, messages)

    def add(self, record: Record) -> None:
        # Checked before anything changes: an append is refused whole or stored whole.
        data = record.data
        end = (self.ends[-1] if self.ends else 0) + len(data)
        check_offset_bounds(Offset(len(self.records) + 1, end))
        self.records.append((data, record.messages))
        self.ends.append(end)


class MemoryStore:
    """:class:`~chatscale.durable.store.DurableStore` in a dict; one event loop, so each
    request's checks and changes run without interleaving."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        # Per stream, the futures of the readers waiting for a change: one future each,
        # rather than an Event and a task per wait (a live read waits once per delivery).
        self._changed: dict[str, set[asyncio.Future[None]]] = {}
        self._swept_ms = 0

    # --- lookups and lifecycle ---------------------------------------------------------

    def _find(self, path: str, now_ms: int) -> _Stream | None:
        stream = self._streams.get(path)
        if stream is None:
            return None
        deadline = stream.deadline_ms
        fixed = stream.config.expires_at_ms
        if fixed is not None:
            deadline = min(deadline or fixed, fixed)
        if deadline is not None and now_ms >= deadline and not stream.deleted:
            self._drop(path, stream)
            return self._streams.get(path)
        return stream

    def _get(self, path: str, now_ms: int) -> _Stream:
        stream = self._find(path, now_ms)
        if stream is None:
            raise ProtocolError(404, rules.NOT_FOUND)
        if stream.deleted:
            raise ProtocolError(410, rules.GONE)
        return stream

    def _drop(self, path: str, stream: _Stream) -> None:
        """Delete: kept as a tombstone while forks hold references, else removed, releasing
        its own source (which may cascade up a fork chain)."""
        self._notify(path)
        if stream.refs > 0:
            stream.deleted = True
            return
        del self._streams[path]
        source = stream.source
        while source is not None:
            parent = self._streams.get(source)
            if parent is None:
                break
            parent.refs -= 1
            if parent.refs > 0 or not parent.deleted:
                break
            del self._streams[source]
            source = parent.source

    def _notify(self, path: str) -> None:
        waiters = self._changed.pop(path, None)
        if waiters is not None:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # --- the protocol ------------------------------------------------------------------

    def _sweep(self, now_ms: int) -> None:
        # Expired streams nobody reads again would otherwise stay: at most every 10 s,
        # creating a stream looks them all up (which drops the expired ones).
        if now_ms - self._swept_ms < _SWEEP_EVERY_MS:
            return
        self._swept_ms = now_ms
        for path in list(self._streams):
            self._find(path, now_ms)

    async def create(self, path: str, request: CreateRequest) -> WriteResult:
        now = _now_ms()
        self._sweep(now)
        existing = self._find(path, now)
        if existing is not None:
            if existing.deleted:
                raise ProtocolError(409, "a deleted stream still read by forks holds this path")
            check_same(existing.config, existing.fork, request)
            return WriteResult(existing.info(), 200)
        stream = self._new_stream(request, now)
        record = encode_record(stream.config.content_type, request.body, allow_empty_array=True)
        if record is not None:
            stream.add(record)
        stream.closed = request.closed
        if request.fork is not None:
            source = self._streams[request.fork.source]
            source.refs += 1
            stream.source = request.fork.source
        self._streams[path] = stream
        return WriteResult(stream.info(), 201)

    def _new_stream(self, request: CreateRequest, now: int) -> _Stream:
        fork = request.fork
        records: list[Record] = []
        if fork is None:
            settled = settle(request, None)
        else:
            source = self._find(fork.source, now)
            if source is None:
                raise ProtocolError(404, rules.NO_SOURCE)
            if source.deleted:
                raise ProtocolError(409, rules.DELETED_SOURCE)
            settled = settle(request, source.config)
            point = fork.offset if fork.offset is not None else source.tail
            check_fork_point(source.ends, point)
            cut_from = source.record(point.record) if point.record < len(source.records) else None
            records = fork_records(
                [source.record(index) for index in range(point.record)],
                cut_from,
                fork.sub_offset,
                is_json(settled.content_type),
            )
        stream = _Stream(id=uuid.uuid4().hex[:16], config=settled, fork=fork_key(fork))
        for record in records:
            stream.add(record)
        stream.touch(now)
        return stream

    async def append(self, path: str, request: AppendRequest) -> WriteResult:
        return self.append_now(path, request)

    def append_plain(self, path: str, content_type: str, body: bytes) -> Offset | None:
        """See :class:`~chatscale.durable.store.AppendsAtOnce`: what :meth:`append_now` does
        with a plain append to an open stream of ``content_type`` that is not JSON, without
        the request and result objects (most appends are plain; docs/benchmarks.md)."""
        now = _now_ms()
        stream = self._find(path, now)
        if stream is None or stream.deleted or stream.closed:
            return None
        stream_type = stream.config.content_type
        if is_json(stream_type) or media_type(content_type) != media_type(stream_type):
            return None
        record = encode_record(stream_type, body, allow_empty_array=False)
        if record is None:
            return None
        try:
            stream.add(record)
        except ProtocolError:
            return None  # the offsets are exhausted: append_now refuses it
        stream.touch(now)
        self._notify(path)
        return stream.tail

    def append_now(self, path: str, request: AppendRequest) -> WriteResult:
        """What :meth:`append` does, without a coroutine: the server answers appends from
        its HTTP protocol's callback with it. Every check comes before the first change."""
        now = _now_ms()
        stream = self._get(path, now)
        check_content_type(stream.config.content_type, request)
        producer = request.producer
        if producer is not None:
            verdict = check_producer(stream.producers.get(producer.id), producer)
            if verdict is ProducerVerdict.DUPLICATE:
                last = stream.producers[producer.id][1]
                return WriteResult(stream.info(), 204, (producer.epoch, last))
        if stream.closed:
            if request.record is None and producer is None:
                return WriteResult(stream.info(), 204)  # closing again: idempotent
            raise rules.closed(str(stream.tail))
        check_stream_seq(stream.last_seq, request.seq)
        if request.record is not None:
            stream.add(request.record)
        stream.touch(now)
        if request.seq is not None:
            stream.last_seq = request.seq
        if request.close:
            stream.closed = True
        self._notify(path)
        if producer is None:
            return WriteResult(stream.info(), 204)
        stream.producers[producer.id] = (producer.epoch, producer.seq)
        # 200 "new data stored"; a close-only request stored none.
        status = 200 if request.record is not None else 204
        return WriteResult(stream.info(), status, (producer.epoch, producer.seq))

    async def delete(self, path: str) -> None:
        stream = self._get(path, _now_ms())
        self._drop(path, stream)

    async def head(self, path: str) -> StreamInfo:
        return self._get(path, _now_ms()).info()

    async def read(self, path: str, start: Offset | None, max_bytes: int) -> ReadResult:
        now = _now_ms()
        stream = self._get(path, now)
        stream.touch(now)
        tail = stream.tail
        if start is None:
            return ReadResult(stream.info(), tail, tail)
        if start.record > tail.record or (
            start.byte != (stream.ends[start.record - 1] if start.record else 0)
        ):
            raise ProtocolError(400, f"offset {start} {rules.NOT_AN_OFFSET}")
        # Records while their bytes add up to at most max_bytes, and at least one: the ends
        # are the running totals, so the last one is found by bisection.
        first = start.record
        stop = bisect.bisect_right(stream.ends, start.byte + max_bytes, lo=first)
        stop = min(max(stop, first + 1), tail.record)
        records = [Record(data, messages) for data, messages in stream.records[first:stop]]
        end = Offset(stop, stream.ends[stop - 1] if stop else 0)
        return ReadResult(stream.info(), start, end, records)

    async def wait(
        self, path: str, after: Offset, timeout_s: float, seen: int | None = None
    ) -> None:
        stream = self._find(path, _now_ms())
        if stream is None or stream.deleted or stream.closed or stream.tail > after:
            return
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._changed.setdefault(path, set())
        waiters.add(waiter)
        try:
            await woken_or_timed_out(waiter, timeout_s)
        finally:
            waiters.discard(waiter)
            if not waiters and self._changed.get(path) is waiters:
                del self._changed[path]

    async def close(self) -> None:
        for path in list(self._changed):
            self._notify(path)
