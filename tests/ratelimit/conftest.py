"""The backend table of the rate-limit tests: memory and every Redis topology."""

from __future__ import annotations

import pytest

from chatscale.redis import RedisConnection
from tests.conftest import TOPOLOGIES


@pytest.fixture(params=[pytest.param("memory", id="memory"), *TOPOLOGIES])
def backend(request: pytest.FixtureRequest) -> RedisConnection | None:
    """``None`` for process memory, else a connection (fresh prefix) to one topology."""
    if request.param == "memory":
        return None
    connection: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
    return connection
