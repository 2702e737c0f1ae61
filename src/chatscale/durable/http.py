"""The protocol's HTTP side: one ASGI application mounted at ``DURABLE_STREAMS_PATH``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.datastructures import URL, QueryParams
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from chatscale.durable import headers as parse
from chatscale.durable.auth import BearerAuth
from chatscale.durable.content import json_array
from chatscale.durable.errors import ProtocolError
from chatscale.durable.fanout import RECHECK_S, Fanout, FanoutStats
from chatscale.durable.limits import WriteLimit
from chatscale.durable.model import ReadResult, StreamInfo, WriteResult, is_json, is_text
from chatscale.durable.offsets import START, Offset, next_cursor, parse_offset_query
from chatscale.durable.sse import control_event, data_event
from chatscale.durable.store import AppendsAtOnce, DurableStore
from chatscale.server.express import Prepared
from chatscale.server.protocol import BodyWriter, body_writer
from chatscale.server.shortcut import body_send

log = logging.getLogger("chatscale.durable")

_PROTOCOL_HEADERS = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    "Stream-Expires-At, Stream-Seq, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, ETag, Location"
)
_REQUEST_HEADERS = (
    "Authorization, Content-Type, If-None-Match, Stream-TTL, Stream-Expires-At, Stream-Seq, "
    "Stream-Closed, Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, "
    "Producer-Id, Producer-Epoch, Producer-Seq"
)
#: On every answer: fetch() from other origins may read it (the token, not a cookie, is the
#: credential), and the protocol's headers are visible to scripts.
_COMMON = {
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": _PROTOCOL_HEADERS,
}
_COMMON_RAW = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _COMMON.items())
_NEXT_OFFSET = b"stream-next-offset"
_NEXT_OFFSET_LINE = _NEXT_OFFSET + b": %b\r\n"
# Reads of immutable, per-token data: a private cache may keep them briefly.
_CACHEABLE = "private, max-age=60, stale-while-revalidate=300"


class Answer(Prepared):
    """An answer sent as two raw ASGI messages: what Starlette's ``Response`` sends (the
    same headers, lower-cased, with ``content-length`` and the common headers), without
    its per-request header objects; every append and live delivery sends one."""

    __slots__ = ("headers",)

    def __init__(
        self, body: bytes = b"", status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(body, status)
        self.headers = headers or {}

    common = _COMMON_RAW

    def own_headers(self) -> list[tuple[bytes, bytes]]:
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        if self.status >= 200 and self.status not in (204, 304):
            raw.append((b"content-length", str(len(self.body)).encode("latin-1")))
        return raw


class Appended(Answer):
    """The answer to a plain append: 204 and its ``Stream-Next-Offset`` (digits and an
    underscore: nothing to check before it is written)."""

    __slots__ = ("tail",)

    def __init__(self, tail: Offset) -> None:
        # Answer's fields set here: one for every append.
        self.body = b""
        self.status = 204
        self.headers = {}
        self.tail = tail

    def own_headers(self) -> list[tuple[bytes, bytes]]:
        return [_next_offset(self.tail)]

    def own_lines(self, replaced: frozenset[bytes]) -> bytes:
        if _NEXT_OFFSET in replaced:
            return super().own_lines(replaced)
        return _NEXT_OFFSET_LINE % self.tail.raw()


class Call:
    """One request of the protocol, read straight from the ASGI scope: a Starlette
    ``Request`` and its header and query objects were a sizeable share of an append."""

    __slots__ = ("_query", "headers", "method", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.headers = parse.RequestHeaders(scope["headers"])
        self._query: QueryParams | None = None

    @property
    def path(self) -> str:
        """The request's full path, base path included."""
        path: str = self.scope["path"]
        return path

    @property
    def query(self) -> QueryParams:
        """The query string's parameters (parsed on first use: only reads have any)."""
        if self._query is None:
            self._query = QueryParams(self.scope["query_string"])
        return self._query

    async def body(self) -> bytes:
        """The whole body; ``ClientDisconnect`` if the client leaves while sending it."""
        chunks: list[bytes] = []
        while True:
            message = await self.receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect


class EventAnswer(StreamingResponse):
    """Starlette's streaming response, with its body sent past the middleware chain
    (:mod:`chatscale.server.shortcut`): with a thousand readers of one stream, every append
    is a thousand sends, and each wrapper of ``send`` took its share of every one."""

    _direct: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._direct = body_send(scope, send)
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        direct = self._direct or send
        async for chunk in self.body_iterator:
            assert isinstance(chunk, bytes)
            await direct({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@dataclass(frozen=True)
class DurableOptions:
    """The settings the HTTP side needs (``DURABLE_STREAMS_*``)."""

    base_path: str
    long_poll_timeout_s: float
    sse_duration_s: float
    max_read_bytes: int


class DurableStreamsApp:
    """Serves ``{base_path}/{stream name}`` with PUT, POST, GET, HEAD, DELETE and OPTIONS.

    ``store_of`` returns the store once the server has started (it needs Redis)."""

    def __init__(
        self, store_of: Callable[[], DurableStore], options: DurableOptions, auth: BearerAuth
    ) -> None:
        self.store_of = store_of
        self.options = options
        self.auth = auth
        self.paths = parse.StreamPath(options.base_path)
        self._ending = False
        self._waiting: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()
        self._live_reads: dict[tuple[str, Offset], asyncio.Future[ReadResult]] = {}
        #: ``DURABLE_STREAMS_WRITE_RATE_LIMIT`` (set at start-up), ``None``: unlimited.
        self.write_limit: WriteLimit | None = None
        #: The store, when it appends at once (set at start-up).
        self.at_once: AppendsAtOnce | None = None
        self._frames_sent: dict[tuple[str, Offset, Offset, str, bool, bool], bytes] = {}
        self._fanouts: dict[str, Fanout] = {}
        #: What the fan-outs of live SSE readers did (the metrics export it).
        self.fanout_stats = FanoutStats()

    def end_live_reads(self) -> None:
        """On drain: every long-poll answers now, every SSE read ends after what it has
        sent (clients continue from their last offset on another instance), and new live
        reads do not wait."""
        self._ending = True
        for fanout in list(self._fanouts.values()):
            fanout.release_all()
        for task in self._waiting:
            self._cut.add(task)
            task.cancel()

    @property
    def followers(self) -> int:
        """How many SSE readers follow their stream's fan-out now."""
        return sum(fanout.count for fanout in self._fanouts.values())

    async def close(self) -> None:
        """Stop the fan-outs (their readers go on alone until the server stops them)."""
        await asyncio.gather(*(fanout.stop() for fanout in list(self._fanouts.values())))

    async def _wait(
        self, store: DurableStore, name: str, after: ReadResult, timeout_s: float
    ) -> None:
        """``store.wait``, cut short by :meth:`end_live_reads`.

        The drain cancels the waiting tasks (and takes its cancellation back) instead of
        racing each wait against an event: a live read waits once per delivery, and two
        extra tasks per wait were a large part of its cost."""
        if self._ending:
            return
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            await store.wait(name, after.end, timeout_s, after.seen)
        except asyncio.CancelledError:
            # Cut by the drain alone: the read answers with what it has; any other
            # cancellation (the client left, shutdown) goes on.
            if task not in self._cut or task.uncancel() > 0:
                raise
        finally:
            self._waiting.discard(task)
            self._cut.discard(task)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.respond(scope, receive)
        await response(scope, receive, send)

    async def respond(self, scope: Scope, receive: Receive) -> Answer | Response:
        """The answer to one request, not yet sent (:class:`chatscale.server.express.Responder`)."""
        request = Call(scope, receive)
        try:
            response = await self.dispatch(request)
        except ProtocolError as exc:
            response = _refusal(exc, request.method)
        if not isinstance(response, Answer):
            response.headers.update(_COMMON)
        return response

    async def dispatch(self, request: Call) -> Response | Answer:
        """Route one request by method."""
        method = request.method
        if method == "OPTIONS":
            return _preflight()
        name = self.paths(request.path)
        write = method in ("PUT", "POST", "DELETE")
        if method not in ("PUT", "POST", "DELETE", "GET", "HEAD"):
            raise ProtocolError(405, f"{method} is not a method of the protocol", {"Allow": _ALLOW})
        self.auth.check(request.headers, write=write)
        if write and self.write_limit is not None:
            await self.write_limit.check(request.scope, request.headers)
        store = self.store_of()
        if method == "PUT":
            body = await request.body()
            result = await store.create(
                name, parse.create_request(request.headers, body, self.paths)
            )
            return self._written(method, request.scope, result)
        if method == "POST":
            body = await request.body()
            result = await store.append(name, parse.append_request(request.headers, body))
            return self._written(method, request.scope, result)
        if method == "DELETE":
            await store.delete(name)
            return Answer(status=204)
        if method == "HEAD":
            return _head(await store.head(name))
        return await self._get(request, name, store)

    def takes_now(self, method: str) -> bool:
        """Whether :meth:`respond_now` may answer requests of ``method``: appends, to a store
        that appends at once, without a write rate limit."""
        return method == "POST" and self.at_once is not None and self.write_limit is None

    def respond_now(self, scope: Scope, body: bytes) -> Answer | None:
        """The answer to a request whose whole ``body`` is here, given at once, or ``None``
        when it needs the event loop: anything but an append, a store over the network, a
        write rate limit, or a refusal (:meth:`respond` answers those, the same checks
        refusing the same way: nothing was changed). See
        :class:`chatscale.server.express.AtOnce`."""
        store = self.at_once
        if store is None or not self.takes_now(scope["method"]):
            return None
        try:
            name = self.paths(scope["path"])
            plain = parse.plain_append(scope["headers"]) if body else None
            if plain is not None:
                content_type, authorization = plain
                self.auth.check(authorization, write=True)
                tail = store.append_plain(name, content_type, body)
                if tail is not None:
                    return Appended(tail)
            headers = parse.RequestHeaders(scope["headers"])
            self.auth.check(headers, write=True)
            result = store.append_now(name, parse.append_request(headers, body))
        except ProtocolError:
            return None
        return self._written("POST", scope, result)

    def _written(self, method: str, scope: Scope, result: WriteResult) -> Answer:
        info = result.info
        headers = {"Stream-Next-Offset": str(info.tail)}
        if info.closed:
            headers["Stream-Closed"] = "true"
        if result.producer is not None:
            headers["Producer-Epoch"] = str(result.producer[0])
            headers["Producer-Seq"] = str(result.producer[1])
        if method == "PUT":
            headers["Content-Type"] = info.content_type
            if result.status == 201:
                headers["Location"] = _location(scope)
        return Answer(status=result.status, headers=headers)

    async def _get(self, request: Call, name: str, store: DurableStore) -> Answer | Response:
        query = request.query
        live_values = query.getlist("live")
        live = live_values[0] if live_values else None
        if live not in (None, "long-poll", "sse") or len(live_values) > 1:
            raise ProtocolError(400, "live must be long-poll or sse")
        offsets = query.getlist("offset")
        wanted = parse_offset_query(offsets)
        if live is not None and not offsets:
            raise ProtocolError(
                400, f"live={live} needs an offset parameter (-1, now or an offset)"
            )
        cursor = query.get("cursor")
        if live == "sse":
            writer = body_writer(request.scope)
            return await self._sse(name, store, wanted.offset, wanted.now, cursor, writer)
        if wanted.now:
            result = await store.read(name, None, self.options.max_read_bytes)
            if live is None:
                return self._tail_answer(result.info)
            start = result.end
        else:
            start = wanted.offset or START
        result = await store.read(name, start, self.options.max_read_bytes)
        if live is None:
            return self._data_answer(request, result, None)
        deadline = time.monotonic() + self.options.long_poll_timeout_s
        while not result.records and not result.info.closed:
            left = deadline - time.monotonic()
            if left <= 0 or self._ending:
                break
            await self._wait(store, name, result, left)
            result = await self._live_read(store, name, start)
        if result.records:
            return self._data_answer(request, result, next_cursor(cursor))
        headers = {
            "Stream-Next-Offset": str(result.end),
            "Stream-Up-To-Date": "true",
            "Cache-Control": "no-store",
        }
        if result.info.closed:
            headers["Stream-Closed"] = "true"
        else:
            headers["Stream-Cursor"] = next_cursor(cursor)
        return Answer(status=204, headers=headers)

    def _tail_answer(self, info: StreamInfo) -> Answer:
        headers = {
            "Stream-Next-Offset": str(info.tail),
            "Stream-Up-To-Date": "true",
            "Cache-Control": "no-store",
        }
        if info.closed:
            headers["Stream-Closed"] = "true"
        headers["Content-Type"] = info.content_type
        body = b"[]" if is_json(info.content_type) else b""
        return Answer(body, 200, headers)

    def _data_answer(self, request: Call, result: ReadResult, cursor: str | None) -> Answer:
        info = result.info
        closed_end = info.closed and result.up_to_date
        etag = f'"{info.id}:{result.start}:{result.end}{":c" if closed_end else ""}"'
        headers = {
            "Stream-Next-Offset": str(result.end),
            "ETag": etag,
            "Cache-Control": _CACHEABLE,
            "Stream-Cursor": cursor or next_cursor(request.query.get("cursor")),
        }
        if result.up_to_date:
            headers["Stream-Up-To-Date"] = "true"
        if closed_end:
            headers["Stream-Closed"] = "true"
        if etag in _etags(request.headers.get("if-none-match")):
            return Answer(status=304, headers=headers)
        if is_json(info.content_type):
            body = json_array(result.records)
        else:
            body = b"".join(r.data for r in result.records)
        # Set directly: Starlette would add "; charset=utf-8" to a text media type.
        headers["Content-Type"] = info.content_type
        return Answer(body, 200, headers)

    async def _sse(
        self,
        name: str,
        store: DurableStore,
        start: Offset | None,
        now: bool,
        cursor: str | None,
        writer: BodyWriter | None = None,
    ) -> Response:
        first = await store.read(
            name, None if now else (start or START), self.options.max_read_bytes
        )
        content_type = first.info.content_type
        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
        if not is_text(content_type):
            headers["Stream-SSE-Data-Encoding"] = "base64"
        return EventAnswer(
            self._events(name, store, first, cursor, writer),
            headers=headers,
        )

    async def _events(
        self,
        name: str,
        store: DurableStore,
        result: ReadResult,
        cursor: str | None,
        writer: BodyWriter | None,
    ) -> AsyncIterator[bytes]:
        # The connection ends after DURABLE_STREAMS_SSE_DURATION (so CDNs can collapse
        # readers), when the stream is closed and fully sent, or when it is deleted.
        deadline = time.monotonic() + self.options.sse_duration_s
        content_type = result.info.content_type
        announced = False
        while True:
            position = result.end
            finished = result.info.closed and result.up_to_date
            # A close that brought no records still ends with its control event
            # (``streamClosed``): without it the reader would reconnect to learn of it.
            if result.records or not announced or finished:
                # From the request's cursor each time, as the reference server does: fed its
                # own last one, the jitter would push the cursor further at every event.
                yield self._frame(content_type, result, next_cursor(cursor), finished)
                announced = True
            if finished:
                return
            if result.up_to_date:
                left = deadline - time.monotonic()
                if left <= 0 or self._ending:
                    return
                if writer is not None:
                    # Caught up: the stream's fan-out writes the next events until it
                    # releases this reader, which goes on from where that left it.
                    fanout = self._fanout(store, name)
                    position = await fanout.follow(position, result.seen, cursor, writer, left)
                else:
                    await self._wait(store, name, result, min(left, RECHECK_S))
            try:
                result = await self._live_read(store, name, position)
            except ProtocolError:
                return  # deleted while streaming
            except asyncio.CancelledError:
                raise

    def _fanout(self, store: DurableStore, name: str) -> Fanout:
        fanout = self._fanouts.get(name)
        if fanout is None:

            def encode(result: ReadResult, cursor: str) -> bytes:
                return self._frame(result.info.content_type, result, cursor, False)

            fanout = Fanout(
                store, name, self.options.max_read_bytes, encode, self._idle, self.fanout_stats
            )
            self._fanouts[name] = fanout
        return fanout

    def _idle(self, fanout: Fanout) -> None:
        if self._fanouts.get(fanout.name) is fanout:
            del self._fanouts[fanout.name]

    async def _live_read(self, store: DurableStore, name: str, start: Offset) -> ReadResult:
        """A live reader's read after a wake, shared with the readers at the same position
        that ask while it runs: an append wakes every reader of the stream at once.

        Only these reads are shared (a plain GET, which must see every append acknowledged
        before it, never joins an earlier read). A reader woken by a later change than the
        one that started the read may get it without that change: its next wait then
        returns at once (the tail is past it, or the store heard of a change since the
        read's ``seen``) and it reads again."""
        key = (name, start)
        running = self._live_reads.get(key)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not running.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The reader that ran it left: read alone.
        running = asyncio.get_running_loop().create_future()
        self._live_reads[key] = running
        try:
            result = await store.read(name, start, self.options.max_read_bytes)
        except asyncio.CancelledError:
            running.cancel()
            raise
        except BaseException as exc:
            running.set_exception(exc)
            running.exception()  # retrieved: nobody may have joined
            raise
        else:
            running.set_result(result)
            return result
        finally:
            if self._live_reads.get(key) is running:
                del self._live_reads[key]

    def _frame(self, content_type: str, result: ReadResult, cursor: str, finished: bool) -> bytes:
        """The SSE bytes of ``result``: its data event (none when it has no records) and the
        control event after it, in one write, so a reader never sees data without the offset
        that follows it. Encoded once for every reader of the same records and cursor (a
        stream with many subscribers sends each append to all of them)."""
        key = (result.info.id, result.start, result.end, cursor, result.up_to_date, finished)
        frame = self._frames_sent.get(key)
        if frame is None:
            data = data_event(content_type, result.records) if result.records else b""
            frame = data + control_event(
                str(result.end), cursor, up_to_date=result.up_to_date, closed=finished
            )
            if len(self._frames_sent) >= _FRAMES_KEPT:
                del self._frames_sent[next(iter(self._frames_sent))]
            self._frames_sent[key] = frame
        return frame


#: Encoded SSE frames kept for other readers: the latest few, at most max_read each.
_FRAMES_KEPT = 16
_ALLOW = "GET, HEAD, PUT, POST, DELETE, OPTIONS"


def _next_offset(tail: Offset) -> tuple[bytes, bytes]:
    """``Stream-Next-Offset``, on the answer to every write."""
    return (_NEXT_OFFSET, tail.raw())


def _preflight() -> Answer:
    return Answer(
        status=204,
        headers={
            "Access-Control-Allow-Methods": _ALLOW,
            "Access-Control-Allow-Headers": _REQUEST_HEADERS,
            "Access-Control-Max-Age": "600",
        },
    )


def _head(info: StreamInfo) -> Answer:
    headers = {
        "Stream-Next-Offset": str(info.tail),
        "Cache-Control": "no-store",
        "Content-Type": info.content_type,
    }
    if info.ttl is not None:
        headers["Stream-TTL"] = str(info.ttl)
    if info.expires_at is not None:
        headers["Stream-Expires-At"] = info.expires_at
    if info.closed:
        headers["Stream-Closed"] = "true"
    return Answer(status=200, headers=headers)


def _location(scope: Scope) -> str:
    """The created stream's URL, percent-encoded: the path in the scope is decoded, and a
    name outside latin-1 cannot go in a header as it is (it was a 500, the stream created)."""
    url = URL(scope=scope)
    return str(url.replace(path=quote(url.path), query=""))


def _etags(value: str | None) -> set[str]:
    if not value:
        return set()
    return {part.strip().removeprefix("W/") for part in value.split(",")}


def _refusal(exc: ProtocolError, method: str) -> Response:
    headers = {**exc.headers, "Cache-Control": "no-store"}
    if method == "HEAD":
        return Response(status_code=exc.status, headers=headers)
    return JSONResponse({"error": exc.message}, exc.status, headers)
