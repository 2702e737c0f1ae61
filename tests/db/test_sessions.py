"""Sessions in the database (deployments without Redis): stored, expired, swept, and still
there for the next process."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select

from chatscale.db.database import Database
from chatscale.db.schema import sessions
from chatscale.db.sessions import SqlSessionStore


async def _rows(database: Database) -> int:
    async with database.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(sessions)) or 0)


async def test_save_load_touch_delete(database: Database) -> None:
    store = SqlSessionStore(database.engine)
    assert await store.load("h1") is None
    await store.save("h1", '{"a":1}', 60)
    found = await store.load("h1")
    assert found is not None and found.state == '{"a":1}'
    assert 55 < found.ttl_left <= 60
    await store.save("h1", '{"a":2}', 600)  # replaces
    again = await store.load("h1")
    assert again is not None and again.state == '{"a":2}' and again.ttl_left > 590
    await store.touch("h1", 30)
    touched = await store.load("h1")
    assert touched is not None and touched.ttl_left <= 30
    await store.touch("absent", 30)  # no error, nothing created
    assert await store.load("absent") is None
    await store.delete("h1")
    await store.delete("h1")  # already gone: no error
    assert await store.load("h1") is None


async def test_an_expired_session_is_not_returned_and_is_swept(database: Database) -> None:
    store = SqlSessionStore(database.engine, sweep_every=3)
    await store.save("old1", "{}", 0)
    await store.save("old2", "{}", 0)
    assert await store.load("old1") is None
    await store.save("live", "{}", 60)  # the third save sweeps
    assert await _rows(database) == 1
    assert await store.load("live") is not None


async def test_sessions_outlive_the_process(
    database: Database, open_database: Callable[[], Database]
) -> None:
    await SqlSessionStore(database.engine).save("h1", '{"user":"anon-x"}', 600)
    await database.close()
    restarted = open_database()
    await restarted.start(migrate=True)
    found = await SqlSessionStore(restarted.engine).load("h1")
    assert found is not None and found.state == '{"user":"anon-x"}'
