"""What ``chatscale serve`` checks before it announces its URL: the settings, the listening
socket and Redis. Each failure is a :class:`ChatscaleError` printed on one line."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket

from chatscale.config import Settings
from chatscale.errors import ChatscaleError, ConfigError
from chatscale.redis import connect_or_refused
from chatscale.sessions.factory import session_config


def check_settings(settings: Settings) -> None:
    """The checks of the settings that ``serve`` makes beyond loading them (a missing or
    weak SESSION_SECRET with USE_REDIS); :class:`ConfigError` on failure."""
    if settings.use_redis or settings.session_secret is not None:
        session_config(settings)
    event_loop(settings)


def event_loop(settings: Settings) -> str:
    """The event loop uvicorn runs (SERVER_EVENT_LOOP): ``uvloop`` when it is installed
    (``auto``, the default; ``uvicorn[standard]`` brings it everywhere but on Windows), else
    ``asyncio``; :class:`ConfigError` when ``uvloop`` is asked for and missing."""
    wanted = settings.server_event_loop
    if wanted == "asyncio":
        return wanted
    if importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    if wanted == "uvloop":
        raise ConfigError(
            "SERVER_EVENT_LOOP",
            wanted,
            "needs uvloop, which is not installed (it does not exist on Windows)",
            "auto or asyncio",
        )
    return "asyncio"


def listen_socket(settings: Settings) -> socket.socket:
    """Bind HOST:PORT now, so that a taken port fails before the URL is announced."""
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise ChatscaleError(f"cannot listen on {shown}:{port}: {reason} (HOST/PORT)") from exc
    sock.set_inheritable(True)  # --workers children serve on it
    return sock


def check_redis(settings: Settings) -> None:
    """Connect to Redis once (when USE_REDIS is on) and close again."""
    if settings.redis is None:
        return

    async def probe() -> None:
        assert settings.redis is not None
        connection = await connect_or_refused(settings.redis)
        await connection.close()

    asyncio.run(probe())


def check_database(settings: Settings) -> None:
    """Open the database once and bring its schema to this version (DATABASE_MIGRATE), or
    check it is there: a bad URL, a refused connection or an old schema fails here, on one
    line, before the server announces itself (and before ``--workers`` fork)."""
    if settings.database is None:
        return
    from chatscale.db.database import Database

    async def probe() -> None:
        assert settings.database is not None
        database = Database(settings.database)
        try:
            await database.start(migrate=settings.database_migrate)
        finally:
            await database.close()

    asyncio.run(probe())
