"""Shortcuts past Starlette's layers: lanes of paths served by a shorter chain, and the
server's own ``send`` for the body of a long response, past the middleware chain.

A :class:`Lane` serves every HTTP request under its prefix with its own application (its
own middleware around it), before Starlette's error middleware, router and exception
handlers: the Durable Streams protocol answers its own errors, and an append is a small
request whose cost was mostly those layers (docs/benchmarks.md, Durable Streams).

Every middleware of the application wraps ``send`` in a coroutine of its own, and each of
them acts on ``http.response.start`` only (headers, cookies, status, metrics). An event
stream sends one body message per event for as long as it lasts: through nine wrappers,
that was a sizeable share of the CPU per delivered token (docs/benchmarks.md, h2).
:class:`ShortcutStarlette` keeps the ``send`` it was given in the scope; :func:`body_send`
hands it to a response that sends its head (and its last message) through the chain as
usual and the body messages in between directly. A middleware that needs to see body
messages must not be added in front of such a response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from chatscale.server.express import ExpressLane, Whole

#: Where the application keeps the server's ``send`` in an HTTP request's scope.
SCOPE_KEY = "chatscale.server_send"


@dataclass(frozen=True)
class Lane:
    """HTTP requests whose path starts with ``prefix`` go to ``app``; ``label`` is their
    ``route`` in the request metrics."""

    prefix: str
    label: str
    app: ASGIApp

    @cached_property
    def raw_prefix(self) -> bytes:
        """The prefix as a request target starts with it."""
        return self.prefix.encode()


def wrap(app: ASGIApp, middleware: Sequence[Middleware]) -> ASGIApp:
    """``app`` inside ``middleware``, the first outermost (as Starlette stacks them)."""
    for cls, args, kwargs in reversed(middleware):
        app = cls(app, *args, **kwargs)
    return app


class ShortcutStarlette(Starlette):
    """Starlette, keeping the server's ``send`` in every HTTP request's scope, and serving
    the requests of its :attr:`lanes` by their own applications."""

    lanes: tuple[Lane, ...] = ()

    def _lane(self, scope: Scope) -> Lane | None:
        path: str = scope["path"]
        for lane in self.lanes:
            if path.startswith(lane.prefix):
                scope["app"] = self
                scope["route"] = lane.label
                return lane
        return None

    def takes_now(self, method: str, target: bytes) -> bool:
        """Whether a request may be answered at once (:meth:`answer_now`): it goes to an
        express lane whose application answers such requests without waiting.
        ``target`` is the request line's, as received (a target whose path would only
        match once decoded goes the usual way)."""
        for lane in self.lanes:
            if target.startswith(lane.raw_prefix):
                app = lane.app
                return isinstance(app, ExpressLane) and app.takes_now(method)
        return False

    def answer_now(self, scope: Scope, body: bytes) -> Whole | None:
        """The whole answer to an HTTP request whose whole ``body`` has arrived, from its
        express lane (:meth:`ExpressLane.answer_now`), or ``None``: serve it as usual."""
        lane = self._lane(scope)
        if lane is None or not isinstance(lane.app, ExpressLane):
            return None
        return lane.app.answer_now(scope, body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope[SCOPE_KEY] = send
        try:
            lane = self._lane(scope)
            if lane is not None:
                await lane.app(scope, receive, send)
                return
            await super().__call__(scope, receive, send)
        finally:
            # The server's send is a method of the request's cycle, which holds the scope:
            # kept here, it made every request a reference cycle, twelve objects left to the
            # garbage collector (most of its work under load: docs/benchmarks.md).
            del scope[SCOPE_KEY]


def body_send(scope: Scope, send: Send) -> Send:
    """The server's ``send`` for body messages after the response head, else ``send``."""
    direct: Send | None = scope.get(SCOPE_KEY)
    return send if direct is None else direct
