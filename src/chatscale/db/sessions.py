"""Sessions in the SQL database, for deployments without Redis: they survive a restart
(with SESSION_SECRET set, a returning visitor finds their conversations)."""

from __future__ import annotations

import time

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from chatscale.db.engine import write_transaction
from chatscale.db.schema import sessions
from chatscale.sessions.store import StoredSession

#: Expired rows are deleted every this many saves (and never returned before that).
SWEEP_EVERY = 500


class SqlSessionStore:
    """A :class:`chatscale.sessions.store.SessionStore` on one table (wall-clock expiry)."""

    def __init__(self, engine: AsyncEngine, *, sweep_every: int = SWEEP_EVERY) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._sweep_every = sweep_every
        self._saves = 0

    async def load(self, id_hash: str) -> StoredSession | None:
        """See :meth:`SessionStore.load`."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(sessions.c.state, sessions.c.expires_at).where(
                        sessions.c.id_hash == id_hash
                    )
                )
            ).first()
        if row is None:
            return None
        left = float(row.expires_at) - time.time()
        return StoredSession(row.state, left) if left > 0 else None

    async def save(self, id_hash: str, state: str, ttl: int) -> None:
        """See :meth:`SessionStore.save` (an upsert)."""
        expires_at = time.time() + ttl
        statement = self._insert(sessions).values(
            id_hash=id_hash, state=state, expires_at=expires_at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[sessions.c.id_hash],
            set_={"state": statement.excluded.state, "expires_at": statement.excluded.expires_at},
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(statement)
            self._saves += 1
            if self._saves % self._sweep_every == 0:
                await conn.execute(delete(sessions).where(sessions.c.expires_at <= time.time()))

    async def touch(self, id_hash: str, ttl: int) -> None:
        """See :meth:`SessionStore.touch`."""
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(sessions)
                .where(sessions.c.id_hash == id_hash)
                .values(expires_at=time.time() + ttl)
            )

    async def delete(self, id_hash: str) -> None:
        """See :meth:`SessionStore.delete`."""
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash))

    async def aclose(self) -> None:
        """Nothing to do: the engine belongs to the application."""
