"""Server-Sent Events: resume positions, encoding, heartbeats, disconnects and drain.

A lean ASGI response rather than sse-starlette's: two tasks per connection (the event pump
and the disconnect listener; heartbeats are timeouts of the response's own wait) instead of
four, no task per event, and no import-time patching of uvicorn's signal handling (the
server drains on SIGTERM itself, see :mod:`chatscale.server.lifecycle`). On drain every open
stream gets a ``reconnect`` event and is closed, so EventSource reconnects (through the load
balancer, to another instance) and resumes with ``Last-Event-ID``.

What a connection buffers is bounded: events are pulled one at a time, only once the
previous frame went out (the server's send waits while its write buffer is above its
high-water mark), final events carry no copy of the whole answer, and a client that reads
nothing for ``SSE_STALL_TIMEOUT`` seconds is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from chatscale.server.errors import ApiError
from chatscale.server.protocol import BodyWriter, body_writer
from chatscale.server.shortcut import body_send
from chatscale.streams import Event, EventSink

log = logging.getLogger("chatscale.server")

#: Comment heartbeat interval: keeps idle connections open through proxies (nginx, HAProxy
#: and cloud load balancers close idle ones after 60 s by default).
HEARTBEAT_S = 15.0
#: Reconnection delay suggested to EventSource.
RETRY_MS = 1000
#: What ``Last-Event-ID`` and ``?after=`` accept (also in /openapi.json): an event id, or
#: empty / ``0`` for "from the start".
EVENT_ID_PATTERN = r"^(0|[1-9][0-9]{0,17})?$"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


def resume_position(request: Request) -> str | None:
    """Where a client resumes: the ``Last-Event-ID`` header, else ``?after=``, else None.

    EventSource sends the header on its own reconnects, with the URL it was created with, so
    the header wins over a (possibly older) ``after``. Raises 400 for a malformed id.
    """
    header = request.headers.get("last-event-id")
    value = header if header else request.query_params.get("after")
    if value is None:
        return None
    # Exactly the documented pattern (no stripping): what /openapi.json refuses, this does.
    if not _EVENT_ID.fullmatch(value):
        raise ApiError(400, f"bad event id {value[:40]!r}: expected a decimal event number")
    return value if value not in ("", "0") else None


def frame(event: str, data: Any, event_id: str | None = None, retry: int | None = None) -> bytes:
    """One SSE frame; ``data`` is JSON-encoded (so it never contains a newline)."""
    parts = []
    if event_id is not None:
        parts.append(f"id: {event_id}\n")
    if retry is not None:
        parts.append(f"retry: {retry}\n")
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    parts.append(f"event: {event}\ndata: {payload}\n\n")
    return "".join(parts).encode()


def _delta_frame(event_id: str, text: str) -> bytes:
    """A delta's frame, as :func:`frame` writes it, in a tenth of the time: orjson encodes
    a string exactly as ``json.dumps(ensure_ascii=False)`` does (its floats differ, hence
    only deltas). A string orjson refuses (a lone surrogate) raises ``TypeError``."""
    return (
        b"id: "
        + event_id.encode()
        + b'\nevent: delta\ndata: {"text":'
        + orjson.dumps(text)
        + b"}\n\n"
    )


def encode(event: Event) -> bytes:
    """One stored event as an SSE frame (``id`` always set).

    A final event goes out without ``text``: the client has the whole answer from the
    deltas already (a resume continues exactly after its last event), and a copy of it in
    every connection's last frame is what made each stalled reader hold a whole answer.
    """
    data = event.data
    if event.type == "delta" and len(data) == 1:
        text = data.get("text")
        if type(text) is str:
            try:
                return _delta_frame(event.id, text)
            except TypeError:
                pass  # frame() below fails on it the way it always has
    if event.final and "text" in data:
        data = {key: value for key, value in data.items() if key != "text"}
    return frame(event.type, data, event.id)


class ClientStalled(Exception):
    """A client read nothing for the stall timeout: its connection is given up."""


class Streams:
    """The open event streams of one application, so a drain can close them all."""

    def __init__(self) -> None:
        self.open: set[EventStream] = set()
        self.closing = False

    def reconnect_all(self) -> None:
        """Tell every open stream's client to reconnect elsewhere, and close it."""
        self.closing = True
        for stream in list(self.open):
            stream.reconnect()


class LiveFrames:
    """Frames written straight to an event stream's socket by the stream backend, as their
    events are stored, while the stream's subscription is caught up (a backend's event
    sink, :meth:`chatscale.streams.StreamManager.subscribe`): no task wakes per event.

    Open only while the response is under way past its first frame, and only where the
    server can write synchronously (:func:`chatscale.server.protocol.body_writer`); an
    event it cannot write now is declined, and goes through the frames' iterator."""

    __slots__ = ("_write",)

    def __init__(self) -> None:
        self._write: BodyWriter | None = None

    def open(self, write: BodyWriter | None) -> None:
        """Start taking events (``None``: this server cannot write synchronously)."""
        self._write = write

    def close(self) -> None:
        """Stop taking events."""
        self._write = None

    def sink(self, encode: Callable[[Event], bytes]) -> EventSink:
        """An event sink writing ``encode(event)``."""

        def take(event: Event) -> bool:
            write = self._write
            return write is not None and write(encode(event))

        return take


class EventStream:
    """An ASGI ``text/event-stream`` response fed by an async iterator of frames (and, with
    ``live``, by the stream backend directly while it is caught up)."""

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        registry: Streams,
        *,
        first: bytes = b"",
        heartbeat_s: float = HEARTBEAT_S,
        stall_timeout_s: float | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        reconnect_frame: bytes | None = None,
        live: LiveFrames | None = None,
    ) -> None:
        self.frames = frames
        self.live = live
        #: Response headers (another protocol on SSE adds its own, e.g. the AI SDK's).
        self.headers = _HEADERS if headers is None else [*_HEADERS, *headers]
        #: What ends a stream cut by a drain or a backend failure (default: a ``reconnect``
        #: event; a protocol without it ends the body instead).
        self.reconnect_frame = (
            frame("reconnect", {}, retry=RETRY_MS) if reconnect_frame is None else reconnect_frame
        )
        self.registry = registry
        self.first = first
        self.heartbeat_s = heartbeat_s
        #: A send (a frame or a heartbeat) that cannot complete within this many seconds
        #: drops the client (``None``: wait forever).
        self.stall_timeout_s = stall_timeout_s
        self._pump: asyncio.Task[None] | None = None
        self._reconnect = False
        #: The pump's sends: how many started, when the one under way started (None: none
        #: is), and the timer that checks it against the stall timeout.
        self._sends = 0
        self._sending_since: float | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._stalled = False
        self._scope: Scope = {}

    def reconnect(self) -> None:
        """Stop the stream with a ``reconnect`` event."""
        self._reconnect = True
        if self._pump is not None:
            self._pump.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._run(scope, receive, send)
        except ClientStalled:
            # Nothing more can be sent (every send waits for the client to read), so the
            # response stays unfinished and the server closes the connection.
            log.warning(
                "dropped an event stream whose client read nothing for %s s (SSE_STALL_TIMEOUT)",
                self.stall_timeout_s,
            )

    async def _send(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self.stall_timeout_s):
                await send(message)
        except TimeoutError:
            raise ClientStalled from None

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        await self._send(
            send, {"type": "http.response.start", "status": 200, "headers": self.headers}
        )
        closing = self.registry.closing
        first, self.first = self.first, b""
        await self._send(
            send,
            {
                "type": "http.response.body",
                "body": f"retry: {RETRY_MS}\n\n".encode() + (b"" if closing else first),
                "more_body": True,
            },
        )
        del first
        if closing:
            # Draining: nothing from here; the client resumes on another instance.
            self._reconnect = True
            await self._close(send)
            with contextlib.suppress(Exception):
                await self.frames.aclose()  # type: ignore[attr-defined]
            return
        self.registry.open.add(self)
        write = body_writer(scope)
        if self.live is not None:
            self.live.open(write)
        self._pump = asyncio.create_task(self._run_pump(send, write))
        disconnect = asyncio.create_task(_disconnected(receive))
        waiting = {self._pump, disconnect}
        try:
            while True:
                done, _ = await asyncio.wait(
                    waiting, timeout=self.heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    await self._send(
                        send, {"type": "http.response.body", "body": b":\n\n", "more_body": True}
                    )
                    continue
                break
            if disconnect in done:
                return
            if self._stalled:
                raise ClientStalled
            if self._pump.done() and not self._pump.cancelled():
                stalled = self._pump.exception()
                if isinstance(stalled, ClientStalled):
                    raise stalled
            await self._close(send)
        except OSError:
            return  # the client went away while we wrote
        finally:
            if self.live is not None:
                self.live.close()
            self.registry.open.discard(self)
            if self._watch is not None:
                self._watch.cancel()
            for task in waiting:
                task.cancel()
            for task in waiting:
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await self.frames.aclose()  # type: ignore[attr-defined]

    async def _run_pump(self, send: Send, write: BodyWriter | None) -> None:
        # Past the middleware (see chatscale.server.shortcut), and without a timeout scope
        # per frame: one timer per stall timeout watches the send under way (_watch_sends).
        send = body_send(self._scope, send)
        # Each frame written now when the socket takes it (``write``: no coroutine, and a
        # write that completes cannot stall); ``send`` when it cannot (its buffer is full).
        stall = self.stall_timeout_s
        loop = asyncio.get_running_loop()
        async for chunk in self.frames:
            if write is not None and write(chunk):
                continue
            message = {"type": "http.response.body", "body": chunk, "more_body": True}
            if stall is None:
                await send(message)
                continue
            self._sends += 1
            self._sending_since = began = loop.time()
            if self._watch is None:
                self._watch = loop.call_at(began + stall, self._watch_sends, self._sends)
            await send(message)
            self._sending_since = None

    def _watch_sends(self, watched: int) -> None:
        """Drop the client when send number ``watched`` is still under way, a stall timeout
        after it started; else watch the send under way, if any."""
        self._watch = None
        since, pump = self._sending_since, self._pump
        if since is None or pump is None or pump.done() or self.stall_timeout_s is None:
            return
        if self._sends == watched:
            self._stalled = True
            pump.cancel()
            return
        loop = asyncio.get_running_loop()
        self._watch = loop.call_at(since + self.stall_timeout_s, self._watch_sends, self._sends)

    async def _close(self, send: Send) -> None:
        body = b""
        if self._pump is not None and self._pump.done() and not self._pump.cancelled():
            failure = self._pump.exception()
            if failure is not None:
                # A backend hiccup: the client resumes from its last event id.
                log.warning("event stream failed: %r", failure)
                self._reconnect = True
        if self._reconnect:
            body = self.reconnect_frame
        with contextlib.suppress(OSError):
            await self._send(send, {"type": "http.response.body", "body": body, "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
