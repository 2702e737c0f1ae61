"""The server's own ``send`` for the body of a long response, past the middleware chain.

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

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

#: Where the application keeps the server's ``send`` in an HTTP request's scope.
SCOPE_KEY = "chatscale.server_send"


class ShortcutStarlette(Starlette):
    """Starlette, keeping the server's ``send`` in every HTTP request's scope."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SCOPE_KEY] = send
        await super().__call__(scope, receive, send)


def body_send(scope: Scope, send: Send) -> Send:
    """The server's ``send`` for body messages after the response head, else ``send``."""
    direct: Send | None = scope.get(SCOPE_KEY)
    return send if direct is None else direct
