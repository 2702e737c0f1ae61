"""The protocol on Redis (standalone, Sentinel, Cluster): every instance serves every stream.

Each request on one stream is one Lua script in the stream's hash slot (``lua/``): appends
are checked (content type, producer epoch and sequence, closure, ``Stream-Seq``), stored and
announced atomically, whichever instance received them, so instances never race and a read
anywhere sees every acknowledged append. Live readers wait on the stream's channel through one
pub/sub connection per process (:class:`~chatscale.streams.redis_hub.Hub`), however many of
them wait. Forks touch two streams, which on Cluster live in different slots: the source's
reference is taken first and given back if the fork is not created (see ``docs``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from chatscale.durable import rules
from chatscale.durable.content import encode_record
from chatscale.durable.errors import ProtocolError
from chatscale.durable.forks import Inherited, check_same, fork_key, fork_records, settle
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
from chatscale.durable.offsets import Offset
from chatscale.durable.store import woken_or_timed_out
from chatscale.redis.connection import RedisConnection
from chatscale.redis.group import SharedCalls
from chatscale.streams.redis_hub import Hub, Listener
from chatscale.streams.scripts import LuaScript

_PACKAGE = "chatscale.durable"
CREATE = LuaScript("create", _PACKAGE)
APPEND = LuaScript("append", _PACKAGE)
READ = LuaScript("read", _PACKAGE, uses=["offset"])
DELETE = LuaScript("delete", _PACKAGE)
FORK_SOURCE = LuaScript("fork_source", _PACKAGE, uses=["offset"])
RELEASE = LuaScript("release", _PACKAGE)
_SCRIPTS = (CREATE, APPEND, READ, DELETE, FORK_SOURCE, RELEASE)

_PARTS = ("meta", "data", "ends", "prod")
#: A wait is re-checked at least this often even if a message was lost.
_RECHECK_S = 5.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt_int(value: Any) -> int | None:
    text = _text(value)
    return int(text) if text else None


class RedisDurableStore:
    """:class:`~chatscale.durable.store.DurableStore` on a :class:`RedisConnection`."""

    def __init__(self, redis: RedisConnection) -> None:
        self.redis = redis
        # redis-py types replies as unions over decode modes; ours are always bytes.
        self.client: Any = redis.client
        self.keys = redis.keys
        probe = max(1.0, redis.config.socket_timeout_s)
        self.hub = Hub(self.client, probe_s=probe, idle_s=_RECHECK_S)
        self._watches: dict[str, _Watch] = {}
        # Concurrent requests' scripts share round trips on one connection (per node on
        # Cluster), which loads every script as it connects.
        self._calls = SharedCalls(self.client, redis.config.socket_timeout_s, scripts=_SCRIPTS)

    async def _run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        return await self._calls.script(script, keys, args)

    async def start(self) -> None:
        """Nothing to prepare: scripts load with the first round trip, channels on first
        wait."""

    def _keys(self, name: str) -> list[str]:
        return [self.keys.durable(name, part) for part in _PARTS]

    def _channel(self, name: str) -> str:
        return self.keys.durable(name, "ev")

    # --- PUT -----------------------------------------------------------------------------

    async def create(self, path: str, request: CreateRequest) -> WriteResult:
        fork = request.fork
        if fork is None:
            return await self._create(path, request, settle(request, None), [], None)
        reply = await self._run(
            FORK_SOURCE,
            self._keys(fork.source)[:3],
            [
                "" if fork.offset is None else fork.offset.record,
                "" if fork.offset is None else fork.offset.byte,
                fork.sub_offset,
            ],
        )
        code = int(reply[0])
        if code == 404:
            raise ProtocolError(404, rules.NO_SOURCE)
        if code == 4090:
            raise ProtocolError(409, rules.DELETED_SOURCE)
        if code == 400:
            raise ProtocolError(400, "Stream-Fork-Offset is not an offset of the source")
        if code == 4001:
            raise ProtocolError(400, "Stream-Fork-Sub-Offset needs an append at Stream-Fork-Offset")
        # The source's reference is now held: give it back unless the fork is created.
        created = False
        try:
            source = Inherited(
                _text(reply[1]), _opt_int(reply[2]), _text(reply[3]) or None, _opt_int(reply[4])
            )
            settled = settle(request, source)
            data = [Record(bytes(r), 1) for r in reply[5:]]
            cut_from = data.pop() if fork.sub_offset else None
            records = fork_records(data, cut_from, fork.sub_offset, is_json(settled.content_type))
            result = await self._create(path, request, settled, records, fork.source)
            created = result.status == 201
            return result
        finally:
            if not created:
                await self._release(fork.source)

    async def _create(
        self,
        path: str,
        request: CreateRequest,
        settled: Inherited,
        records: list[Record],
        source: str | None,
    ) -> WriteResult:
        body = encode_record(settled.content_type, request.body, allow_empty_array=True)
        if body is not None:
            records = [*records, body]
        fork = fork_key(request.fork)
        stream_id = uuid.uuid4().hex[:16]
        args: list[Any] = [
            stream_id,
            settled.content_type,
            media_type(settled.content_type),
            "" if settled.ttl is None else settled.ttl,
            settled.expires_at or "",
            "" if settled.expires_at_ms is None else settled.expires_at_ms,
            "1" if request.closed else "0",
            *(fork or ("", "", "")),
            source or "",
            *(r.data for r in records),
        ]
        reply = await self._run(CREATE, self._keys(path), args)
        info = _info(reply[1:8])
        if int(reply[0]) == 1:
            return WriteResult(info, 201)
        if _text(reply[8]) == "1":
            raise ProtocolError(409, "a deleted stream still read by forks holds this path")
        existing = Inherited(info.content_type, info.ttl, info.expires_at, _opt_int(reply[10]))
        existing_fork = (_text(reply[11]), _text(reply[12]), _text(reply[13]))
        check_same(existing, existing_fork if existing_fork[0] else None, request)
        return WriteResult(info, 200)

    async def _release(self, name: str) -> None:
        # Releasing may remove a deleted source, which releases its own source in turn.
        current: str = name
        while current:
            current = _text(await self._run(RELEASE, self._keys(current), []))

    # --- POST ----------------------------------------------------------------------------

    async def append(self, path: str, request: AppendRequest) -> WriteResult:
        producer = request.producer
        record = request.record
        args: list[Any] = [
            media_type(request.content_type) if request.content_type else "",
            "1" if record is not None else "0",
            record.data if record is not None else b"",
            request.seq or "",
            producer.id if producer else "",
            producer.epoch if producer else 0,
            producer.seq if producer else 0,
            "1" if request.close else "0",
            self._channel(path),
            self.hub.publish_cmd,
        ]
        reply = await self._run(APPEND, self._keys(path), args)
        code = int(reply[0])
        if code in (200, 204, 2040):
            info = _info(reply[1:8])
            echo = None
            if producer is not None:
                echo = (int(reply[8]), int(reply[9]))
            return WriteResult(info, 204 if code == 2040 else code, echo)
        raise _append_refusal(code, reply, request)

    # --- DELETE, HEAD, GET -------------------------------------------------------------

    async def delete(self, path: str) -> None:
        reply = await self._run(
            DELETE, self._keys(path), [self._channel(path), self.hub.publish_cmd]
        )
        code = int(reply[0])
        if code != 204:
            raise _lookup_refusal(code)
        source = _text(reply[1])
        if source:
            await self._release(source)

    async def head(self, path: str) -> StreamInfo:
        return (await self._read(path, None, 0, touch=False)).info

    async def read(self, path: str, start: Offset | None, max_bytes: int) -> ReadResult:
        watch = self._watches.get(path)
        seen = watch.changes if watch is not None and watch.ready else None
        return await self._read(path, start, max_bytes, touch=True, seen=seen)

    async def _read(
        self,
        path: str,
        start: Offset | None,
        max_bytes: int,
        *,
        touch: bool,
        seen: int | None = None,
    ) -> ReadResult:
        args = [
            "" if start is None else start.record,
            "" if start is None else start.byte,
            max_bytes,
            "1" if touch else "0",
        ]
        reply = await self._run(READ, self._keys(path), args)
        code = int(reply[0])
        if code == 400:
            raise ProtocolError(400, f"offset {start} {rules.NOT_AN_OFFSET}")
        if code != 200:
            raise _lookup_refusal(code)
        info = _info(reply[1:8])
        first = Offset(int(reply[8]), int(reply[9]))
        end = Offset(int(reply[10]), int(reply[11]))
        records = [Record(bytes(r), 1) for r in reply[12:]]
        return ReadResult(info, first, end, records, seen)

    async def wait(
        self, path: str, after: Offset, timeout_s: float, seen: int | None = None
    ) -> None:
        watch = self._watches.get(path)
        if watch is None:
            watch = self._watches[path] = _Watch(self, path)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watch.waiters.add(waiter)
        try:
            if seen is None or seen != watch.changes or not watch.ready:
                if seen is not None and seen != watch.changes:
                    return  # a change was heard of since the read began: read again
                # Subscribed first, then checked: an append in between wakes the waiter.
                await asyncio.shield(watch.joined)
                state = await self.client.hmget(self._keys(path)[0], "n", "closed", "deleted")
                if state[0] is None or state[1] == b"1" or state[2] == b"1":
                    return
                if int(state[0]) > after.record:
                    return
            await woken_or_timed_out(waiter, timeout_s)
        finally:
            watch.waiters.discard(waiter)

    async def close(self) -> None:
        for watch in list(self._watches.values()):
            watch.task.cancel()
            await asyncio.gather(watch.task, return_exceptions=True)
        await self._calls.close()
        await self.hub.close()


class _Watch:
    """This process's subscription to one stream's channel, shared by all its live readers
    (one pub/sub listener and one check per stream, not per reader and delivery).

    ``changes`` counts what was heard: messages, and losses or quiet spells after which
    readers must read again. A reader whose read began while the subscription was confirmed
    and ``changes`` has not moved since can wait without asking Redis: any later append
    publishes to the channel, and so bumps ``changes`` and wakes it."""

    def __init__(self, store: RedisDurableStore, path: str) -> None:
        self.store = store
        self.path = path
        self.channel = store._channel(path)
        self.listener = Listener(path, limit=1_000_000)
        self.changes = 0
        self.ready = False  # subscribed and confirmed, nothing lost since
        self.waiters: set[asyncio.Future[None]] = set()
        loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[None] = loop.create_future()
        self.task = loop.create_task(self._run())

    def _changed(self) -> None:
        self.changes += 1
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _run(self) -> None:
        hub, listener = self.store.hub, self.listener
        try:
            await hub.join(self.channel, listener)
            self.ready = not listener.behind
            self.joined.set_result(None)
            while True:
                await listener.wait()
                lost = listener.lost or listener.overflowed or listener.behind
                quiet = listener.stale and not listener.queue
                listener.reset()
                if quiet and not self.waiters:
                    return  # nobody waited through a quiet spell: unsubscribe
                self.ready = self.ready and not lost
                self._changed()
                if lost:
                    await hub.rejoin(self.channel, listener)
                    self.ready = not listener.behind
        finally:
            if self.store._watches.get(self.path) is self:
                del self.store._watches[self.path]
            hub.leave(self.channel, listener)
            if not self.joined.done():
                self.joined.set_result(None)
            self.ready = False
            self._changed()  # whoever still waits reads again (and makes a new watch)


def _info(fields: list[Any]) -> StreamInfo:
    """``id, ct, ttl, exp, closed, n, b`` as the scripts return them."""
    stream_id, content_type, ttl, expires_at, closed, records, size = fields
    return StreamInfo(
        id=_text(stream_id),
        content_type=_text(content_type),
        ttl=_opt_int(ttl),
        expires_at=_text(expires_at) or None,
        closed=_text(closed) == "1",
        tail=Offset(int(records), int(size)),
    )


def _lookup_refusal(code: int) -> ProtocolError:
    if code == 410:
        return ProtocolError(410, rules.GONE)
    return ProtocolError(404, rules.NOT_FOUND)


def _append_refusal(code: int, reply: list[Any], request: AppendRequest) -> ProtocolError:
    if code == 409:
        return rules.content_type_mismatch(request.content_type or "", _text(reply[1]))
    if code == 403:
        assert request.producer is not None
        return rules.stale_epoch(request.producer.epoch, int(reply[1]))
    if code == 400:
        assert request.producer is not None
        return rules.new_epoch_not_at_zero(request.producer.seq)
    if code == 4092:
        return rules.gap(int(reply[1]), int(reply[2]))
    if code == 4093:
        return rules.closed(str(Offset(int(reply[1]), int(reply[2]))))
    if code == 4094:
        return rules.seq_regression(request.seq or "", _text(reply[1]))
    return _lookup_refusal(code)
