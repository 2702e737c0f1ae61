"""Shared fixtures: real Redis topologies (tests.harness) and chatscale connections to them.

Each connection fixture gives a fresh key prefix, so tests sharing one session-scoped server
never see each other's keys or channels.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from chatscale.config import RedisConfig, load_settings
from chatscale.redis import RedisConnection, connect

pytest_plugins = ["tests.harness.fixtures"]


@pytest.fixture(scope="session", autouse=True)
def database_outside_the_repository(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Without DATABASE_URL the server writes ``chatscale.db`` into its working directory:
    every app and ``chatscale serve`` of the tests uses a file in a temporary folder instead
    (their child processes inherit the variable). Tests of the Redis conversation store set
    DATABASE_URL empty; tests of the default clear it and change directory."""
    # Also over a developer's own DATABASE_URL: the tests must not write into it.
    previous = os.environ.get("DATABASE_URL")
    folder = tmp_path_factory.mktemp("database")
    os.environ["DATABASE_URL"] = f"sqlite+aiosqlite:///{folder / 'tests.db'}"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


def redis_config(uri: str, *, prefix: str = "", **overrides: Any) -> RedisConfig:
    """Settings for ``uri`` built exactly as start-up builds them (same validation)."""
    settings = load_settings(
        use_redis=True, redis_uri=uri, redis_key_prefix=prefix or None, **overrides
    )
    assert settings.redis is not None
    return settings.redis


@pytest.fixture
async def standalone_conn(redis_standalone: Any) -> AsyncIterator[RedisConnection]:
    """A connection to the shared standalone server, with a fresh prefix."""
    connection = await connect(redis_config(redis_standalone.url(), prefix=unique_prefix()))
    yield connection
    await connection.close()


@pytest.fixture
async def cluster_conn(redis_cluster: Any) -> AsyncIterator[RedisConnection]:
    """A connection to the shared 3-master Cluster, with a fresh prefix."""
    uri = ",".join(redis_cluster.urls())
    connection = await connect(redis_config(uri, prefix=unique_prefix()))
    yield connection
    await connection.close()


@pytest.fixture
async def sentinel_conn(redis_sentinel: Any) -> AsyncIterator[RedisConnection]:
    """A connection through the shared Sentinel deployment, with a fresh prefix."""
    connection = await connect(redis_config(redis_sentinel.sentinel_url(), prefix=unique_prefix()))
    yield connection
    await connection.close()


TOPOLOGIES = [
    pytest.param("standalone", id="standalone"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
    pytest.param("sentinel", id="sentinel", marks=pytest.mark.sentinel),
]


@pytest.fixture(params=TOPOLOGIES)
def redis_conn(request: pytest.FixtureRequest) -> RedisConnection:
    """The same test on standalone, Cluster and Sentinel (one table, with markers).

    A plain function on purpose: pytest-asyncio sets up the async fixture it names.
    """
    connection: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
    return connection


@pytest.fixture
async def make_conn() -> AsyncIterator[Any]:
    """Open more connections (standing for more instances); all are closed at the end."""
    opened: list[RedisConnection] = []

    async def make(uri: str, prefix: str, **overrides: Any) -> RedisConnection:
        connection = await connect(redis_config(uri, prefix=prefix, **overrides))
        opened.append(connection)
        return connection

    yield make
    for connection in opened:
        await connection.close()
