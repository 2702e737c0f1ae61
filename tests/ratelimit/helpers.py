"""Build RateLimits on memory or on a test connection's Redis, through the real settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from chatscale.config import RedisConfig, Settings, load_settings
from chatscale.ratelimit import RateLimits
from chatscale.redis import RedisConnection
from chatscale.redis.uri import Topology


def uri_of(config: RedisConfig) -> str:
    """The REDIS_URI that produced ``config`` (credentials and TLS aside)."""
    target = config.target
    scheme = "rediss" if target.tls else "redis"
    if target.topology is Topology.SENTINEL:
        hosts = ",".join(str(n) for n in target.nodes)
        return f"{scheme}+sentinel://{hosts}/{target.service_name}"
    return ",".join(f"{scheme}://{node}" for node in target.nodes)


def settings_for(conn: RedisConnection | None, **overrides: Any) -> Settings:
    """Settings for memory (``conn`` None) or for ``conn``'s Redis and prefix."""
    if conn is None:
        return load_settings(**overrides)
    return load_settings(
        use_redis=True,
        redis_uri=uri_of(conn.config),
        redis_key_prefix=conn.keys.prefix or None,
        **overrides,
    )


@asynccontextmanager
async def open_limits(
    conn: RedisConnection | None, *, lease_ttl_s: float = 60.0, **overrides: Any
) -> AsyncIterator[RateLimits]:
    limits = await RateLimits.create(settings_for(conn, **overrides), conn, lease_ttl_s=lease_ttl_s)
    try:
        yield limits
    finally:
        await limits.aclose()
