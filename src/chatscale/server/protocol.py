"""uvicorn's HTTP/1.1 protocol (httptools) with the limits uvicorn lacks.

uvicorn bounds neither the size of request headers (``h11_max_incomplete_event_size``
applies only to its h11 protocol, not to httptools, the one ``uvicorn[standard]`` runs) nor
the time they take to arrive: a client could send a 64 MB header, or one byte a minute, and
hold memory or a connection for ever. :class:`GuardedHttpToolsProtocol` counts the bytes
received while a request's headers are incomplete and runs a timer from the connection's (or
the request's) first byte to the end of the headers (on a kept-alive connection, only once a
packet leaves a request's headers incomplete: most requests arrive whole, and then cost no
timer), and answers its errors, like uvicorn's own 400, as JSON. Bodies are bounded by
:mod:`chatscale.server.bodylimit`.

It also sends each response's head together with the first part of its body: uvicorn
writes them to the socket one after the other, and on a small answer that second write (a
system call, a TCP segment, a wake-up of the client) was a sizeable share of the server's
CPU per request (docs/benchmarks.md, h2). See :class:`HeadHoldingTransport`. And a whole
answer (:func:`send_whole`) waits for the end of the event loop's turn, to go out with the
turn's other answers (:mod:`chatscale.server.corked`).
"""

from __future__ import annotations

import asyncio
import copy
import http
import json
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Protocol, cast

import httptools
import uvicorn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from chatscale.server.bodylimit import BODY_RECEIVED, LINGER_S
from chatscale.server.corked import CorkedTransport, turn_writer
from chatscale.server.headers import SECURITY_HEADERS

#: At most this many bytes of answers given at once wait for the end of a turn on one
#: connection (the default high-water mark of a transport's write buffer).
_WAITING_BYTES = 65_536

#: Where the protocol keeps (a weak reference to) a request's response cycle in its scope.
CYCLE_KEY = "chatscale.cycle"

#: Writes one part of a response body now; ``False`` when it cannot (see :func:`body_writer`).
BodyWriter = Callable[[bytes], bool]


def body_writer(scope: MutableMapping[str, Any]) -> BodyWriter | None:
    """A synchronous writer of body parts for the chunked response of ``scope``'s request,
    or ``None`` when the request did not come through :class:`GuardedHttpToolsProtocol`.

    What the ASGI ``send`` of a body message does, without a coroutine: a live event stream
    fanned out to a thousand readers writes each event to each of them from one loop,
    instead of waking a thousand tasks (docs/durable-streams.md). The writer declines, and
    the caller falls back to ``send`` (which waits for the socket to drain), when the
    response has not started, is complete, is not chunked, the client has gone, or the
    socket's write buffer is over its high-water mark.
    """
    ref: weakref.ref[RequestResponseCycle] | None = scope.get(CYCLE_KEY)
    if ref is None:
        return None

    def write(body: bytes) -> bool:
        cycle = ref()
        if (
            cycle is None
            or cycle.disconnected
            or cycle.response_complete
            or not cycle.response_started
            or not cycle.chunked_encoding
            or cycle.flow.write_paused
            or cycle.transport.is_closing()
        ):
            return False
        # uvicorn's chunk framing for a body message with more to come.
        try:
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        except (OSError, RuntimeError):  # uvloop refuses a write to a closed handle
            return False
        return True

    return write


#: The bytes uvicorn allows in header names and in values. Its checks (``HEADER_RE``,
#: ``HEADER_VALUE_RE``) are classes of single bytes searched for one header at a time; deleting
#: the allowed bytes of all names (and all values) at once leaves exactly the refused ones,
#: at a fraction of the cost (the searches were most of a whole answer's CPU here).
_NAME_BYTES = bytes(b for b in range(256) if not HEADER_RE.match(bytes((b,))))
_VALUE_BYTES = bytes(b for b in range(256) if not HEADER_VALUE_RE.match(bytes((b,))))


def refused(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether uvicorn's ``send`` would refuse one of ``headers`` (a byte not allowed in a
    name or in a value)."""
    if not headers:
        return False
    names, values = zip(*headers, strict=True)
    return bool(
        b"".join(names).translate(None, _NAME_BYTES)
        or b"".join(values).translate(None, _VALUE_BYTES)
    )


def header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``headers`` as the lines of a response head, each ending with CRLF."""
    joined = b"\r\n".join(map(b": ".join, headers))
    return joined + b"\r\n" if joined else b""


def whole_answer(
    default_lines: bytes,
    status: int,
    lines: bytes,
    body: bytes,
    keep_alive: bool,
    head_only: bool,
) -> bytes:
    """The bytes of a whole answer as uvicorn writes them: status line, the server's default
    headers (date, server) and the answer's as :func:`header_lines` (checked: see
    :func:`refused`), ``connection: close`` unless the connection is kept alive, and the body
    unless ``head_only`` (a HEAD)."""
    content = [STATUS_LINE[status], default_lines, lines]
    if not keep_alive:
        content.append(b"connection: close\r\n")
    content.append(b"\r\n")
    if not head_only:
        content.append(body)
    return b"".join(content)


def send_whole(
    scope: MutableMapping[str, Any], status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> bool:
    """Send a whole answer now, head and body in one write: what the ASGI ``send`` of its
    ``http.response.start`` and of one last ``http.response.body`` do, without their two
    coroutines, the header checks done one header at a time, and the held head's callback.
    ``headers`` have lower-case names and, unless ``status`` is 204 or 304, a
    ``content-length`` that is the body's.

    ``False`` when nothing was sent and the caller sends as usual: the request did not come
    through :class:`GuardedHttpToolsProtocol`, its answer has started, the client has gone,
    the socket's write buffer is full, uvicorn logs each access, or a header would be
    refused (``send`` then raises as it always does).
    """
    ref: weakref.ref[RequestResponseCycle] | None = scope.get(CYCLE_KEY)
    cycle = None if ref is None else ref()
    if (
        cycle is None
        or cycle.response_started
        or cycle.disconnected
        or cycle.access_log
        or cycle.flow.write_paused
        or cycle.transport.is_closing()
    ):
        return False
    if refused(headers):
        return False
    lines = header_lines(headers)
    data = whole_answer(
        header_lines(cycle.default_headers),
        status,
        lines,
        body,
        cycle.keep_alive,
        scope["method"] == "HEAD",
    )
    cycle.response_started = True
    cycle.response_complete = True
    cycle.waiting_for_100_continue = False
    transport = cycle.transport
    if isinstance(transport, HeadHoldingTransport):
        transport.write_later(data)
    else:
        transport.write(data)
    cycle.message_event.set()
    if not cycle.keep_alive:
        transport.close()
    cycle.on_response()
    return True


class EdgeConfig(uvicorn.Config):
    """uvicorn's configuration plus the header limits (picklable, for ``--workers``)."""

    def __init__(
        self, app: Any, *, max_header_bytes: int, header_timeout_s: float, **options: Any
    ) -> None:
        super().__init__(app, http=GuardedHttpToolsProtocol, **options)
        self.max_header_bytes = max_header_bytes
        self.header_timeout_s = header_timeout_s


async def _rewritten(scope: Any, receive: Any, send: Any) -> None:
    """The application behind :func:`_scope_rewrite`'s middleware: nothing to do."""


def _scope_rewrite(proxy: ProxyHeadersMiddleware) -> Callable[[MutableMapping[str, Any]], None]:
    """What ``proxy`` does to a request's scope (its client and scheme from the
    ``X-Forwarded-*`` headers of a trusted proxy), done at once: uvicorn's own middleware,
    in front of an application that does nothing, run to its end without an event loop
    (it awaits nothing else)."""
    rewriter = copy.copy(proxy)
    rewriter.app = _rewritten

    def rewrite(scope: MutableMapping[str, Any]) -> None:
        step = rewriter(scope, None, None)  # type: ignore[arg-type]
        try:
            step.send(None)
        except StopIteration:
            return
        step.close()
        raise RuntimeError("uvicorn's proxy headers middleware waited for something")

    return rewrite


class AnswersNow(Protocol):
    """An application that answers some whole requests at once (the server's application:
    :class:`chatscale.server.shortcut.ShortcutStarlette`)."""

    def takes_now(self, method: str, target: bytes) -> bool:
        """Whether a request of ``method`` to ``target`` (as received) may be answered at
        once, once whole."""
        ...

    def answer_now(
        self, scope: MutableMapping[str, Any], body: bytes
    ) -> tuple[int, bytes, bytes] | None:
        """The whole answer (status, :func:`header_lines` already checked, body) to the
        request of ``scope`` whose whole body is ``body``; ``None``: serve it as usual."""
        ...


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` refusing oversized (431) and slow (408) request headers,
    and answering at once what the application answers at once (:class:`AnswersNow`).

    A request the application takes at once (an append to a stream in memory) is held from
    its headers to its last byte, then answered from this callback: no response cycle, task,
    ASGI message or coroutine, which were most of such a request's cost
    (docs/benchmarks.md, Durable Streams). One that the application then declines, or
    whose body does not arrive whole in the packet that ends its headers, starts its
    response cycle as usual with what was held. Only a request with nothing before it is
    held (a pipelined one waits for the answer before it, in its cycle).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes: int = getattr(config, "max_header_bytes", 32_768)
        self.header_timeout_s: float = getattr(config, "header_timeout_s", 10.0)
        self._in_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        #: Whether the bytes received so far end with a whole request (nothing pending).
        self._at_message_end = False
        self._refused = False
        self._closer: asyncio.TimerHandle | None = None
        app: object = self.app
        #: What uvicorn's proxy headers middleware (TRUSTED_PROXIES) does to a scope.
        self._rewrite: Callable[[MutableMapping[str, Any]], None] | None = None
        if isinstance(app, ProxyHeadersMiddleware):
            self._rewrite = _scope_rewrite(app)
            app = app.app
        now_ok = not self.access_log and config.limit_concurrency is None
        #: The application, when it answers some requests at once (with an access log,
        #: every request takes its cycle: the log line is written there).
        self._now: AnswersNow | None = (
            app if now_ok and hasattr(app, "takes_now") and hasattr(app, "answer_now") else None
        )
        #: Since when the connection has been idle (the loop's time of its last answer);
        #: ``None`` while a request comes or is answered.
        self._idle_from: float | None = None
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._default_bytes = b""
        #: The body so far of a request held to be answered at once.
        self._held: list[bytes] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Whole answers wait for the end of the loop's turn (chatscale.server.corked); every
        # write of the protocol and of its response cycles goes through the same wrapper.
        self._corked = CorkedTransport(transport, turn_writer(self.loop))
        super().connection_made(self._corked)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._closer is not None:
            self._closer.cancel()
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering before the close: dropped
        if self._in_headers:
            self._header_bytes += len(data)
        self._at_message_end = False
        super().data_received(data)
        if self._held is not None:
            # The request held for an answer at once has more to come: its cycle waits.
            self._start_held()
        if not self._in_headers or self.transport.is_closing():
            return
        if self._header_bytes > self.max_header_bytes:
            self._refuse(
                431,
                f"request headers too large: more than {self.max_header_bytes} bytes "
                "(MAX_REQUEST_HEADER_BYTES)",
            )
        elif self._header_timer is None and not self._at_message_end:
            # The next request's headers began (on a kept-alive connection) and are not
            # all here. Armed after parsing rather than before: a request that arrives
            # whole, as nearly all do, then costs no timer at all.
            self._arm()

    def on_message_begin(self) -> None:
        self._at_message_end = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._disarm()
        if self._now is not None and self._takes_now(self._now):
            self._held = []
            return
        self._start_cycle()

    def _takes_now(self, app: AnswersNow) -> bool:
        cycle = self.cycle
        parser = self.parser
        if (
            (cycle is not None and not cycle.response_complete)
            or self.expect_100_continue
            or parser.should_upgrade()
            # A client that does not read its answers: its cycle waits for the socket to
            # drain, and the requests behind it pause the reading (uvicorn's flow control).
            # Answers given at once go out at the end of the turn, so a turn's burst of
            # pipelined requests is bounded by what waits as much as by the socket.
            or self.flow.write_paused
            or self._corked.waiting > _WAITING_BYTES
        ):
            return False
        method = parser.get_method().decode("ascii")
        if not app.takes_now(method, self.url):
            return False
        # The scope's request fields, as uvicorn's on_headers_complete sets them.
        scope = self.scope
        scope["method"] = method
        http_version = parser.get_http_version()
        if http_version != "1.1":
            scope["http_version"] = http_version
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = url.query or b""
        return True

    def _start_held(self) -> None:
        """Serve the held request as usual: its cycle, with the body held so far."""
        held, self._held = self._held, None
        self._start_cycle()
        for body in held or ():
            super().on_body(body)

    def _answer_now(self, app: AnswersNow, body: bytes) -> bool:
        scope = cast("MutableMapping[str, Any]", self.scope)
        scope[BODY_RECEIVED] = True
        given = scope.get("client"), scope.get("scheme")
        if self._rewrite is not None:
            self._rewrite(scope)
        whole = app.answer_now(scope, body)
        if whole is None:
            # Served as usual: uvicorn's middleware will see the scope as it came.
            scope["client"], scope["scheme"] = given
            return False
        status, lines, content = whole
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        data = whole_answer(self._default_lines(), status, lines, content, keep_alive, False)
        self._corked.write_later(data)
        if not keep_alive:
            self._corked.close()
        self.on_response_complete()
        return True

    def _default_lines(self) -> bytes:
        """The server's default headers (date, server) as header lines: uvicorn makes a new
        list when the date changes, once a second."""
        headers = self.server_state.default_headers
        if headers is not self._defaults:
            self._defaults = headers
            self._default_bytes = header_lines(headers)
        return self._default_bytes

    def _start_cycle(self) -> None:
        earlier = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not earlier:
            # Only the response cycle writes through it; the protocol's own writes (its
            # refusals) and flow control use the socket's transport as they are.
            cycle.transport = HeadHoldingTransport(  # type: ignore[assignment]
                self.transport, self.loop
            )
            # A weak reference: the scope must not keep the cycle (and its buffers) alive.
            cycle.scope[CYCLE_KEY] = weakref.ref(cycle)  # type: ignore[literal-required]

    def on_response_complete(self) -> None:
        # A head that no body write followed (a HEAD request's) goes out now, before
        # anything the protocol itself may write next (a refusal of the next request).
        cycle = self.cycle
        if cycle is not None and isinstance(cycle.transport, HeadHoldingTransport):
            cycle.transport.flush()
        # uvicorn's, but with the keep-alive timer armed only when none runs (see
        # _unset_keepalive_if_required).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self._idle_from = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_from = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_due
            )

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn cancels its keep-alive timer whenever data comes, and arms a new one after
        # every answer: a timer made and cancelled per request, a share of a small
        # request's CPU. Here data only marks the connection busy; the timer runs on, and
        # when it fires closes the connection only if it has been idle for the whole
        # timeout since its last answer (else it waits for the rest, or for the next
        # answer to arm it again).
        self._idle_from = None

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        idle_from = self._idle_from
        if idle_from is None:
            return  # busy: the next answer arms it again
        left = idle_from + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def on_body(self, body: bytes) -> None:
        held = self._held
        if held is not None:
            held.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        held = self._held
        if held is not None and self._now is not None:
            body = held[0] if len(held) == 1 else b"".join(held)
            self._held = None
            if self._answer_now(self._now, body):
                self._in_headers = True
                self._at_message_end = True
                return
            self._held = [body]
            self._start_held()
        super().on_message_complete()
        self._in_headers = True
        self._at_message_end = True
        cycle = self.cycle
        if cycle is not None and not cycle.more_body:
            cycle.scope[BODY_RECEIVED] = True  # type: ignore[literal-required]

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse, as JSON."""
        self._refuse(400, "invalid HTTP request")

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self._in_headers or self.transport.is_closing():
            return
        if self._answering():
            self._arm()  # a pipelined request waits for the current answer: not late yet
            return
        if self._header_bytes == 0:
            # Nothing asked: close quietly, as a 408 could cross a request being sent.
            self.transport.close()
            return
        self._refuse(
            408,
            f"request headers not received within {self.header_timeout_s:g} s "
            "(REQUEST_HEADER_TIMEOUT)",
        )

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse(self, status: int, error: str) -> None:
        self._disarm()
        if self._answering():
            self.transport.close()  # an answer is being written: no room for another
            return
        body = json.dumps({"error": error}).encode()
        lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *SECURITY_HEADERS,
        ]
        lines.extend(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"".join([*lines, b"\r\n", body]))
        # Closing with unread data would reset the connection, and the reset can destroy the
        # answer before the client reads it: drop what it still sends for a moment first.
        self._refused = True
        self._closer = self.loop.call_later(LINGER_S, self.transport.close)


class HeadHoldingTransport:
    """What one response cycle writes through: the response head waits for the next write
    (the body's first part, normally sent in the same turn of the event loop) and goes out
    with it in one ``writelines``, i.e. one system call.

    A head that nothing follows in the same turn (a body that takes time to come) goes out
    alone at the loop's next turn, and before a close or the response's end (so before any
    write of the protocol itself). Only the first write is held, and
    the cycle's first write is its head (or a ``100 Continue``, which then goes out by
    itself at the next turn, as a head would): the body's later writes, and so what the
    write buffer's flow control sees, are as before.
    """

    __slots__ = ("_first", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        """Hold the first write; send the held one together with the next."""
        if self._first:
            self._first = False
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self.write_now(data)

    def write_now(self, data: bytes) -> None:
        """Send ``data`` now, after what is held: a whole answer needs no holding."""
        self._first = False
        held = self._held
        if held is None:
            self._transport.write(data)
            return
        self._held = None
        self._transport.writelines((held, data))

    def write_later(self, data: bytes) -> None:
        """Send ``data``, after what is held, at the end of this turn of the loop when the
        connection's transport can wait (:class:`chatscale.server.corked.CorkedTransport`),
        else now."""
        self._first = False
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        transport = self._transport
        if isinstance(transport, CorkedTransport):
            transport.write_later(data)
        else:
            transport.write(data)

    def flush(self) -> None:
        """Send what is held now."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        """Send what is held, then close the connection."""
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing or closed."""
        return self._transport.is_closing()
