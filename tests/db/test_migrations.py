"""Alembic migrations: they build exactly the tables of chatscale.db.schema, and several
instances starting at once on one database migrate it once, without errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from chatscale.db.database import Database, DatabaseError
from chatscale.db.migrate import alembic_config, current_revision, head_revision, upgrade
from chatscale.db.schema import metadata


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_the_migrations_build_the_declared_schema(database: Database) -> None:
    assert await current_revision(database.engine) == head_revision()
    async with database.engine.connect() as conn:
        assert await conn.run_sync(_differences) == []
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"conversations", "messages", "sessions", "alembic_version"} <= tables


async def test_instances_starting_together_migrate_once(
    open_database: Callable[[], Database],
) -> None:
    databases = [open_database() for _ in range(4)]
    await asyncio.gather(*(d.start(migrate=True) for d in databases))
    for database in databases:
        assert await current_revision(database.engine) == head_revision()


async def test_an_unmigrated_database_is_refused_without_migrate(
    open_database: Callable[[], Database],
) -> None:
    database = open_database()
    with pytest.raises(DatabaseError, match=r"chatscale db upgrade") as info:
        await database.start(migrate=False)
    assert "(none)" in str(info.value)


async def test_downgrade_to_nothing_and_up_again(database: Database) -> None:
    def down(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    async with database.engine.begin() as conn:
        await conn.run_sync(down)
    assert await current_revision(database.engine) is None
    assert await upgrade(database.engine, database.target) == head_revision()


async def test_an_unreachable_database_is_one_clear_error() -> None:
    from chatscale.db.url import parse_database_url

    target = parse_database_url("postgresql://someone:hunter2@127.0.0.1:1/nothing")
    database = Database(target)
    try:
        with pytest.raises(DatabaseError) as info:
            await database.start(migrate=True)
    finally:
        await database.close()
    message = str(info.value)
    assert "hunter2" not in message
    assert "someone:***@127.0.0.1:1/nothing" in message
    assert "cannot be used" in message
