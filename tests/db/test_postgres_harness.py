"""The test harness's PostgreSQL: unprivileged, on loopback, isolated databases, and nothing
left behind."""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.harness.postgres import PostgresServer


async def _query(url: str, sql: str) -> object:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()


async def test_the_server_is_unprivileged_and_on_loopback(
    postgres_server: PostgresServer,
) -> None:
    assert postgres_server.process is not None
    # setpriv exec()s postgres: the pid is the postmaster's.
    proc = f"/proc/{postgres_server.process.pid}"
    owner = (await asyncio.to_thread(os.stat, proc)).st_uid
    if os.geteuid() == 0:
        assert owner != 0  # PostgreSQL refuses root; the harness drops to postgres/nobody
    url = postgres_server.url()
    assert await _query(url, "SHOW listen_addresses") == "127.0.0.1"
    assert await _query(url, "SELECT current_setting('port')") == str(postgres_server.port)
    assert postgres_server.port != 5432


async def test_each_test_database_is_new_and_empty(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.create_database(), postgres_server.create_database()
    assert first != second
    await _query(first, "CREATE TABLE only_here (x int)")
    tables = "SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'"
    assert await _query(first, tables) == 1
    assert await _query(second, tables) == 0


def test_stop_removes_everything() -> None:
    from tests.harness.postgres import start_postgres

    server = start_postgres()
    folder = server.dir
    assert (folder / "data" / "PG_VERSION").is_file()
    server.stop()
    assert server.process is not None and server.process.poll() is not None
    assert not folder.exists()
