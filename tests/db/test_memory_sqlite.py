"""``DATABASE_URL=sqlite://`` (SQLite in memory): one database shared by the whole process,
lost with it (for tests and trials)."""

from __future__ import annotations

import asyncio

from chatscale.db.conversations import SqlConversationStore
from chatscale.db.database import Database
from chatscale.db.sessions import SqlSessionStore
from chatscale.db.url import parse_database_url


async def test_sqlite_in_memory_is_one_database_for_every_request() -> None:
    database = Database(parse_database_url("sqlite://"))
    try:
        await database.start(migrate=True)
        store = SqlConversationStore(database.engine)
        sessions = SqlSessionStore(database.engine)
        await asyncio.gather(
            *(
                store.add_user_message("u", f"c{i}", {"role": "user", "content": "x"}, title="x")
                for i in range(20)
            ),
            *(sessions.save(f"h{i}", "{}", 60) for i in range(20)),
        )
        assert len(await store.list("u")) == 20
        assert await sessions.load("h7") is not None
    finally:
        await database.close()
