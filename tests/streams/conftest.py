"""One table of stream backends: memory, and Redis standalone / Cluster / Sentinel.

``streams`` is a factory: ``await streams(**settings_overrides)`` returns a started manager;
on Redis every call stands for another instance (its own connection, same key prefix).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import StreamManager, create_stream_manager
from tests.conftest import redis_config, unique_prefix

MakeManager = Callable[..., Awaitable[StreamManager]]

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("standalone", id="standalone"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
    pytest.param("sentinel", id="sentinel", marks=pytest.mark.sentinel),
]


def redis_uri(request: pytest.FixtureRequest, topology: str) -> str:
    """The URI of the shared server of ``topology``."""
    if topology == "standalone":
        return str(request.getfixturevalue("redis_standalone").url())
    if topology == "cluster":
        return ",".join(request.getfixturevalue("redis_cluster").urls())
    return str(request.getfixturevalue("redis_sentinel").sentinel_url())


async def _factory(uri: str | None) -> AsyncIterator[MakeManager]:
    prefix = unique_prefix()
    managers: list[StreamManager] = []
    connections: list[Any] = []

    async def make(instance_id: str | None = None, **overrides: Any) -> StreamManager:
        if uri is None:
            settings = load_settings(**overrides)
            manager = create_stream_manager(settings, None, instance_id=instance_id)
        else:
            settings = load_settings(
                use_redis=True, redis_uri=uri, redis_key_prefix=prefix, **overrides
            )
            assert settings.redis is not None
            connection = await connect(settings.redis)
            connections.append(connection)
            manager = create_stream_manager(settings, connection, instance_id=instance_id)
        managers.append(manager)
        await manager.start()
        return manager

    yield make
    for manager in managers:
        await manager.close()
    for connection in connections:
        await connection.close()


@pytest.fixture(params=BACKENDS)
async def streams(request: pytest.FixtureRequest) -> AsyncIterator[MakeManager]:
    """Managers of one backend (every backend in turn)."""
    uri = None if request.param == "memory" else redis_uri(request, request.param)
    async for make in _factory(uri):
        yield make


@pytest.fixture(params=BACKENDS[1:])
async def redis_streams(request: pytest.FixtureRequest) -> AsyncIterator[MakeManager]:
    """Managers of the Redis backend on every topology (several instances)."""
    async for make in _factory(redis_uri(request, request.param)):
        yield make


@pytest.fixture
async def standalone_streams(request: pytest.FixtureRequest) -> AsyncIterator[MakeManager]:
    """Managers of the Redis backend on the shared standalone server."""
    async for make in _factory(redis_uri(request, "standalone")):
        yield make


__all__ = ["MakeManager", "redis_config"]
