"""Server-side sessions: signed-cookie ids, JSON data in memory or Redis, pure ASGI middleware.

Typical start-up::

    manager = create_session_manager(settings, connection)   # connection: None without Redis
    app = Starlette(routes=..., middleware=[Middleware(SessionMiddleware, manager=manager)])

In an endpoint, ``get_session(request)`` (or ``request.session``) is a :class:`Session`:
a JSON dict with ``.user_id``, ``.rotate()`` and ``.destroy()``. See ``docs/sessions.md``.
"""

from chatscale.sessions.csrf import OriginCheckMiddleware
from chatscale.sessions.factory import (
    create_session_manager,
    create_session_store,
    session_config,
)
from chatscale.sessions.manager import (
    DuplicateSessionCookie,
    OpenSession,
    SessionConfig,
    SessionManager,
)
from chatscale.sessions.middleware import SessionMiddleware, get_session
from chatscale.sessions.session import Session, SessionDataError
from chatscale.sessions.store import (
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
    StoredSession,
)

__all__ = [
    "DuplicateSessionCookie",
    "MemorySessionStore",
    "OpenSession",
    "OriginCheckMiddleware",
    "RedisSessionStore",
    "Session",
    "SessionConfig",
    "SessionDataError",
    "SessionManager",
    "SessionMiddleware",
    "SessionStore",
    "StoredSession",
    "create_session_manager",
    "create_session_store",
    "get_session",
    "session_config",
]
