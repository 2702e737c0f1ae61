"""Pure ASGI session middleware (no ``BaseHTTPMiddleware``: streaming and SSE pass through).

It loads the session before the application runs, puts it in ``scope["session"]`` (so
Starlette's ``request.session`` works, and FastAPI's too), and saves it when the response
starts, adding ``Set-Cookie`` only when the cookie must change.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatscale.sessions.manager import SessionManager
from chatscale.sessions.session import Session

_START = {"http": "http.response.start", "websocket": "websocket.accept"}


class SessionMiddleware:
    """Give every HTTP and WebSocket request a :class:`Session` in ``scope["session"]``.

    ``Starlette(middleware=[Middleware(SessionMiddleware, manager=...)])``; build the
    manager with :func:`chatscale.sessions.create_session_manager`.
    """

    def __init__(self, app: ASGIApp, manager: SessionManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start_type = _START.get(scope["type"])
        if start_type is None:
            await self.app(scope, receive, send)
            return
        opened = await self.manager.open(scope.get("headers", []))
        scope["session"] = opened.session
        secure = self.manager.is_secure(scope.get("scheme", "http"))

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == start_type and not opened.committed:
                extra = await self.manager.commit(opened, secure=secure)
                if extra:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cookie)
        if opened.committed:
            await self.manager.commit_late(opened)


def get_session(scope_or_request: Any) -> Session:
    """The :class:`Session` of a request (a Starlette ``Request``/``WebSocket`` or a scope).

    Raises ``RuntimeError`` naming the fix when :class:`SessionMiddleware` is not installed.
    """
    scope = getattr(scope_or_request, "scope", scope_or_request)
    session = scope.get("session") if isinstance(scope, dict) else None
    if not isinstance(session, Session):
        raise RuntimeError("no chatscale session on this request: add SessionMiddleware")
    return session
