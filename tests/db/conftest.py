"""The database under test: a SQLite file, and a fresh database of a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chatscale.db.database import Database
from chatscale.db.url import parse_database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database, once per dialect."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
async def open_database(database_url: str) -> AsyncIterator[Callable[[], Database]]:
    """Makes engines on the test's database (each one like another instance's); closed at
    the end."""
    made: list[Database] = []

    def make() -> Database:
        database = Database(parse_database_url(database_url))
        made.append(database)
        return database

    try:
        yield make
    finally:
        for database in made:
            await database.close()


@pytest.fixture
async def database(open_database: Callable[[], Database]) -> Database:
    """The test's database, migrated."""
    opened = open_database()
    await opened.start(migrate=True)
    return opened
