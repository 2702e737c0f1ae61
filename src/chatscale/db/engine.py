"""The async engine for a :class:`~chatscale.db.url.DatabaseTarget`."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

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
        else:
            # In memory: every connection would have a database of its own; one shared
            # connection keeps one database (for the life of the process).
            engine = create_async_engine(target.url, poolclass=StaticPool)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # pre-ping: a pooled connection that PostgreSQL (or a proxy) closed is replaced
    # instead of failing the request that picked it.
    return create_async_engine(target.url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_write_locks: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that writes. On SQLite, the writers of this process take turns on a lock
    first: SQLite has one writer at a time anyway, and waiting here is fair and immediate
    where waiting in its busy handler sleeps in growing steps (seconds of tail latency with
    20 concurrent writers). Writers of other processes still wait in the busy handler."""
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            yield conn
        return
    lock = _write_locks.setdefault(engine, asyncio.Lock())
    async with lock, engine.begin() as conn:
        yield conn


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
