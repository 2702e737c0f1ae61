"""The process's database: engine, migration at start-up, readiness ping, shutdown."""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatscale.db.engine import create_engine
from chatscale.db.migrate import current_revision, head_revision, upgrade
from chatscale.db.url import DatabaseTarget
from chatscale.errors import ChatscaleError

log = logging.getLogger("chatscale.db")


class DatabaseError(ChatscaleError):
    """The database cannot be used (unreachable, or its schema is not this version's)."""


class Database:
    """One engine (a connection pool) for the whole process."""

    def __init__(self, target: DatabaseTarget) -> None:
        self.target = target
        self.engine: AsyncEngine = create_engine(target)

    async def start(self, *, migrate: bool) -> None:
        """Migrate to the newest schema (``migrate``) or check that it is there already."""
        try:
            if migrate:
                revision = await upgrade(self.engine, self.target)
            else:
                revision = await current_revision(self.engine)
        except DatabaseError:
            raise
        except Exception as exc:
            raise DatabaseError(
                f"database {self.target.shown} cannot be used: {type(exc).__name__}: {exc}"
            ) from exc
        head = head_revision()
        if revision != head:
            raise DatabaseError(
                f"database {self.target.shown} is at schema revision {revision or '(none)'}, "
                f"this version of chatscale needs {head}: run `chatscale db upgrade` "
                "(or set DATABASE_MIGRATE=true)"
            )
        log.info("conversations in %s (schema %s)", self.target.shown, revision)

    async def ping(self) -> None:
        """One round trip (readiness)."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
