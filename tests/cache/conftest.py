"""Cache fixtures: one table of backends (memory + every Redis topology)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatscale.cache import Cache, CacheFactory, CacheKeys
from chatscale.config import Settings, load_settings
from chatscale.redis import RedisConnection
from tests.conftest import TOPOLOGIES

BACKENDS = [pytest.param("memory", id="memory"), *TOPOLOGIES]

MakeCache = Callable[[CacheKeys], Cache]


def cache_settings(**overrides: Any) -> Settings:
    """Settings with no forced in-memory namespace unless asked."""
    overrides.setdefault("forced_in_memory_cache_namespaces", "")
    return load_settings(**overrides)


@pytest.fixture(params=BACKENDS)
def backend_conn(request: pytest.FixtureRequest) -> RedisConnection | None:
    """``None`` for memory, else a connection to one Redis topology."""
    if request.param == "memory":
        return None
    connection: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
    return connection


@pytest.fixture
async def factory(backend_conn: RedisConnection | None) -> AsyncIterator[CacheFactory]:
    """A cache factory on memory, standalone, Cluster or Sentinel."""
    made = CacheFactory(cache_settings(), backend_conn)
    yield made
    await made.close()


@pytest.fixture
def make_cache(factory: CacheFactory) -> MakeCache:
    """The cache of a namespace on the parametrised backend."""
    return factory.cache
