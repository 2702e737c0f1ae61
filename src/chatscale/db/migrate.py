"""Bring the schema to the newest revision (Alembic ``upgrade head``), safely from several
processes at once.

On PostgreSQL the upgrade runs in one transaction holding an advisory lock, so instances
starting together migrate one after the other (the later ones find nothing to do), and a
failed migration leaves no half-made schema (PostgreSQL's DDL is transactional). On SQLite
a lock file next to the database file serialises processes of one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatscale.db.url import DatabaseTarget

log = logging.getLogger("chatscale.db")

#: pg_advisory_xact_lock key: "chatscale" in ASCII, so other applications' locks do not clash.
ADVISORY_LOCK_KEY = 0x636861747363616C


def alembic_config() -> Config:
    """Alembic's configuration for chatscale's migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(files("chatscale.db") / "migrations"))
    return config


def head_revision() -> str | None:
    """The newest migration shipped with this version of chatscale."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: not migrated yet)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine, target: DatabaseTarget) -> str | None:
    """Run ``upgrade head``; the revision the database is at afterwards."""
    async with _process_lock(target):
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Released at commit: the next instance then sees the new revision.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
            before = await conn.run_sync(_current)
            await conn.run_sync(_upgrade)
            after = await conn.run_sync(_current)
    if before != after:
        log.info("database %s migrated from %s to %s", target.shown, before or "empty", after)
    return after


def _upgrade(connection: Connection) -> None:
    # Alembic logs each step at INFO; chatscale logs one line for the whole upgrade.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@contextlib.asynccontextmanager
async def _process_lock(target: DatabaseTarget) -> AsyncIterator[None]:
    if target.path is None:
        yield
        return
    lock_path = Path(f"{target.path}.migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = await asyncio.to_thread(lock_path.open, "a")
    try:
        # Blocking flock in a thread: the event loop keeps serving meanwhile.
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock
