"""The async engine for a :class:`~chatscale.db.url.DatabaseTarget`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from chatscale.db.url import DatabaseTarget

#: How long a SQLite writer waits for another process's write lock (``--workers``,
#: a migration running in another process) before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(target: DatabaseTarget) -> AsyncEngine:
    """An engine for ``target`` (SQLite in WAL mode with foreign keys enforced)."""
    if target.dialect == "sqlite":
        if target.path is not None:
            target.path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(target.url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # pre-ping: a pooled connection that PostgreSQL (or a proxy) closed is replaced
    # instead of failing the request that picked it.
    return create_async_engine(target.url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers do not block the writer (several requests, or --workers processes).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL with synchronous=NORMAL is durable across process crashes (a power cut can
        # lose the last commits, never corrupt the file).
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
