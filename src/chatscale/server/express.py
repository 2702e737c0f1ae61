"""An express lane: the layers every request passes, in one step, for an application whose
answers are mostly known whole before they are sent.

The Durable Streams protocol's requests are small and many (an append is one), and each
middleware of the common chain wrapped ``send`` in a coroutine of its own and copied the
answer's head: about as much CPU as the protocol's own work (docs/benchmarks.md, Durable
Streams, "The floor"). :class:`ExpressLane` applies the same rules (request id, security and
instance headers and metrics from :mod:`chatscale.server.head`, the body bound of
:mod:`chatscale.server.bodylimit`, the origin check of :mod:`chatscale.sessions.csrf`, the
catch-all of :mod:`chatscale.server.errors`) without wrapping anything when the request is
plain: its body, if any, has arrived whole within its bound, and it passes the origin check.
The application returns its answer instead of sending it (:class:`Responder`); a
:class:`Prepared` answer goes out as two messages with the common headers added to its own.
Every other request, and every other answer, takes the full chain (``full``), so what a
client sees does not depend on the lane.

A responder that can also answer some requests without waiting for anything (:class:`AtOnce`:
an append to the memory store) is asked first by :meth:`ExpressLane.answer_now`, from the HTTP
protocol's own callback once the request is whole (:mod:`chatscale.server.protocol`): no
task, ASGI message or coroutine for it, the same layers applied.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatscale import logcontext
from chatscale.server.bodylimit import BodyBound, settled
from chatscale.server.errors import failure_response
from chatscale.server.head import ResponseHeads
from chatscale.server.protocol import header_lines, refused, send_whole
from chatscale.sessions.csrf import SAFE_METHODS, cross_origin_problem

RawHeaderList = list[tuple[bytes, bytes]]
#: A whole answer: its status, its head's header lines (checked, see
#: :func:`chatscale.server.protocol.header_lines`) and its body.
Whole = tuple[int, bytes, bytes]


class Prepared:
    """An answer whole before it is sent: a status, raw headers and a body. As an ASGI
    application it sends them as two messages."""

    __slots__ = ("body", "status")

    #: Headers every answer of the class carries, the same each time (lower-case names):
    #: an answer given at once has them joined once for all (``ResponseHeads.lines``).
    common: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, body: bytes = b"", status: int = 200) -> None:
        self.body = body
        self.status = status

    def own_headers(self) -> RawHeaderList:
        """The answer's headers besides :attr:`common`: lower-case names, ``content-length``
        included."""
        raise NotImplementedError

    def own_lines(self, replaced: frozenset[bytes]) -> bytes:
        """:meth:`own_headers` less those named in ``replaced``, as header lines
        (:func:`~chatscale.server.protocol.header_lines`); ``ValueError`` when one has a byte
        uvicorn would refuse."""
        own = [h for h in self.own_headers() if h[0] not in replaced]
        if refused(own):
            raise ValueError(f"a header of the answer has a byte not allowed: {own!r}")
        return header_lines(own)

    def raw_headers(self) -> RawHeaderList:
        """All the answer's headers."""
        headers = self.own_headers()
        headers.extend(self.common)
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.send(send, self.raw_headers())

    async def send(self, send: Send, headers: RawHeaderList) -> None:
        """Send the answer with ``headers`` through ``send``, as two messages."""
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class Responder(Protocol):
    """An application that returns its answer: a :class:`Prepared` one, or an ASGI
    application (a streaming response, a refusal) that sends it."""

    async def respond(self, scope: Scope, receive: Receive) -> ASGIApp: ...


@runtime_checkable
class AtOnce(Protocol):
    """A :class:`Responder` that answers some requests at once, from the whole request."""

    def takes_now(self, method: str) -> bool:
        """Whether :meth:`respond_now` may answer requests of ``method`` (now: its store
        may be known only once the server has started)."""
        ...

    def respond_now(self, scope: Scope, body: bytes) -> Prepared | None:
        """The answer to the request of ``scope`` whose whole body is ``body``, or ``None``
        to have :meth:`Responder.respond` answer it; ``None`` only before any change (the
        request is then served again, as usual)."""
        ...


async def _no_send(message: Message) -> None:
    raise RuntimeError("an answer given at once is returned, not sent")


class ExpressLane:
    """Serves ``responder``'s plain requests with the common layers applied in one step, and
    hands the others to ``full`` (the same application inside the whole chain).

    ``heads`` makes each request's :class:`chatscale.server.head.Head`; ``bound`` is the body
    bound of the lane's requests; ``allowed_origins`` are the normalised ``ALLOWED_ORIGINS``.
    """

    def __init__(
        self,
        responder: Responder,
        full: ASGIApp,
        heads: ResponseHeads,
        bound: BodyBound,
        allowed_origins: frozenset[str],
    ) -> None:
        self.responder = responder
        self.full = full
        self.heads = heads
        self.bound = bound
        self.allowed = allowed_origins
        self._at_once = responder if isinstance(responder, AtOnce) else None

    def plain(self, scope: Scope) -> bool:
        """Whether the request may take the lane: HTTP, no body left to bound or wait for,
        and no cross-origin refusal due. The full chain answers the others as usual."""
        return scope["type"] == "http" and settled(scope, self.bound) and self._same_origin(scope)

    def _same_origin(self, scope: Scope) -> bool:
        return scope["method"] in SAFE_METHODS or cross_origin_problem(scope, self.allowed) is None

    def takes_now(self, method: str) -> bool:
        """Whether :meth:`answer_now` may answer requests of ``method``."""
        return self._at_once is not None and self._at_once.takes_now(method)

    def answer_now(self, scope: Scope, body: bytes) -> Whole | None:
        """The whole answer, common layers included, to a request whose whole ``body`` has
        arrived (:data:`chatscale.server.bodylimit.BODY_RECEIVED` in ``scope``), or ``None``:
        the responder cannot answer it at once, or it is not plain; serve it as usual then.
        An error of the responder is answered as the chain answers it (a JSON 500)."""
        at_once = self._at_once
        # plain(), for a body known whole: its own length is the one bounded.
        if at_once is None or len(body) > self.bound.max_bytes or not self._same_origin(scope):
            return None
        heads = self.heads
        began = time.perf_counter()
        try:
            answer = at_once.respond_now(scope, body)
            if answer is None:
                return None
            lines = heads.lines(scope, answer)
        except Exception as exc:
            head = heads.head(scope, _no_send)
            token = logcontext.request_id.set(head.request_id)
            try:
                failure = failure_response(scope, exc, started=False)
            finally:
                logcontext.request_id.reset(token)
            assert failure is not None  # neither a disconnect nor started
            head.started(failure.status_code)
            heads.done(scope, head)
            lines = header_lines(head.headers(failure.raw_headers))
            return failure.status_code, lines, bytes(failure.body)
        heads.metrics.observe(scope, answer.status, time.perf_counter() - began)
        return answer.status, lines, answer.body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.plain(scope):
            await self.full(scope, receive, send)
            return
        head = self.heads.head(scope, send)
        token = logcontext.request_id.set(head.request_id)
        try:
            try:
                answer = await self.responder.respond(scope, receive)
                if isinstance(answer, Prepared):
                    head.started(answer.status)
                    headers = head.headers(answer.raw_headers())
                    if not send_whole(scope, answer.status, headers, answer.body):
                        await answer.send(send, headers)
                else:
                    await answer(scope, receive, head.send)
            except Exception as exc:
                response = failure_response(scope, exc, started=head.head_at != 0.0)
                if response is not None:
                    await response(scope, receive, head.send)
        finally:
            logcontext.request_id.reset(token)
            self.heads.done(scope, head)
