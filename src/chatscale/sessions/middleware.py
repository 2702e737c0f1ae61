"""Pure ASGI session middleware (no ``BaseHTTPMiddleware``: streaming and SSE pass through).

It loads the session before the application runs, puts it in ``scope["session"]`` (so
Starlette's ``request.session`` works, and FastAPI's too), and saves it when the response
starts, adding ``Set-Cookie`` only when the cookie must change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chatscale.asgi import ASGIApp, Message, Receive, Scope, Send, send_json
from chatscale.sessions.manager import DuplicateSessionCookie, SessionManager
from chatscale.sessions.session import Session

_START = {"http": "http.response.start", "websocket": "websocket.accept"}

#: Decides whether a request may create a session: ``None`` to go on, or the refusal to send.
NewSessionGate = Callable[[Scope], Awaitable[ASGIApp | None]]


class SessionMiddleware:
    """Give every HTTP and WebSocket request a :class:`Session` in ``scope["session"]``.

    ``Starlette(middleware=[Middleware(SessionMiddleware, manager=...)])``; build the
    manager with :func:`chatscale.sessions.create_session_manager`. ``manager`` may also be
    a zero-argument callable, called on each request, for applications that build it in
    their lifespan (it needs the Redis connection); while it returns ``None`` requests pass
    through without a session. ``gate``, when given, is asked before a request without a
    valid session gets a new one (the server rate limits session creation with it); an
    HTTP refusal it returns is sent instead of running the application.
    """

    def __init__(
        self,
        app: ASGIApp,
        manager: SessionManager | Callable[[], SessionManager | None],
        gate: NewSessionGate | None = None,
    ) -> None:
        self.app = app
        self._manager = manager
        self.gate = gate

    @property
    def manager(self) -> SessionManager | None:
        """The manager in force now."""
        if isinstance(self._manager, SessionManager):
            return self._manager
        return self._manager()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start_type = _START.get(scope["type"])
        manager = self.manager if start_type is not None else None
        if start_type is None or manager is None:
            await self.app(scope, receive, send)
            return
        secure = manager.is_secure(scope.get("scheme", "http"))
        try:
            opened = await manager.open(scope.get("headers", []), secure=secure)
        except DuplicateSessionCookie:
            await _refuse_duplicates(scope, receive, send, manager.clear_cookie(secure))
            return
        if opened.session.is_new and self.gate is not None and scope["type"] == "http":
            refusal = await self.gate(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        scope["session"] = opened.session

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == start_type and not opened.committed:
                extra = await manager.commit(opened, secure=secure)
                if extra:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cookie)
        if opened.committed:
            await manager.commit_late(opened)


async def _refuse_duplicates(
    scope: Scope, receive: Receive, send: Send, clear: tuple[bytes, bytes]
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": "several session cookies"})
        return
    await send_json(
        send,
        400,
        {"error": "several session cookies in one request; the old one is cleared, retry"},
        [(b"cache-control", b"no-store"), clear],
    )


def get_session(scope_or_request: Any) -> Session:
    """The :class:`Session` of a request (a Starlette ``Request``/``WebSocket`` or a scope).

    Raises ``RuntimeError`` naming the fix when :class:`SessionMiddleware` is not installed.
    """
    scope = getattr(scope_or_request, "scope", scope_or_request)
    session = scope.get("session") if isinstance(scope, dict) else None
    if not isinstance(session, Session):
        raise RuntimeError("no chatscale session on this request: add SessionMiddleware")
    return session
