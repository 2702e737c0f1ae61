"""Namespaced caches in process memory or on Redis.

Typical start-up::

    factory = await chatscale.cache.configure(settings, redis_connection)
    roles = chatscale.cache.cache(CacheKeys.ROLES)
    await roles.set("admin", {"permissions": ["*"]})
    ...
    await chatscale.cache.shutdown()

Or build a :class:`CacheFactory` and keep it yourself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatscale.cache.base import NAMESPACE_TTL, Cache
from chatscale.cache.clear import ClearOptions, clear_namespaces
from chatscale.cache.codec import CacheInput, CacheValue, JSONInput, JSONValue
from chatscale.cache.errors import (
    CacheCorruptError,
    CacheError,
    CacheKeyError,
    CacheNamespaceError,
    CacheNotConfiguredError,
    CacheTTLError,
    CacheTypeError,
    CacheValueError,
)
from chatscale.cache.factory import CacheFactory, namespace_of
from chatscale.cache.memory import MemoryCache
from chatscale.cache.namespaces import DEFAULT_FORCED_IN_MEMORY, DEFAULT_TTL, CacheKeys
from chatscale.cache.near import NearCache
from chatscale.cache.redis_backend import RedisCache

if TYPE_CHECKING:
    from chatscale.config import Settings
    from chatscale.redis import RedisConnection

_factory: CacheFactory | None = None


async def configure(settings: Settings, redis: RedisConnection | None = None) -> CacheFactory:
    """Install the process's cache factory (closing any previous one) and return it."""
    global _factory
    previous, _factory = _factory, CacheFactory(settings, redis)
    if previous is not None:
        await previous.close()
    return _factory


def cache(namespace: CacheKeys | str) -> Cache:
    """The cache of ``namespace`` from the factory installed by :func:`configure`."""
    if _factory is None:
        raise CacheNotConfiguredError(
            "chatscale.cache.cache() was called before chatscale.cache.configure()"
        )
    return _factory.cache(namespace)


async def shutdown() -> None:
    """Close and uninstall the process's cache factory (idempotent)."""
    global _factory
    previous, _factory = _factory, None
    if previous is not None:
        await previous.close()


__all__ = [
    "DEFAULT_FORCED_IN_MEMORY",
    "DEFAULT_TTL",
    "NAMESPACE_TTL",
    "Cache",
    "CacheCorruptError",
    "CacheError",
    "CacheFactory",
    "CacheInput",
    "CacheKeyError",
    "CacheKeys",
    "CacheNamespaceError",
    "CacheNotConfiguredError",
    "CacheTTLError",
    "CacheTypeError",
    "CacheValue",
    "CacheValueError",
    "ClearOptions",
    "JSONInput",
    "JSONValue",
    "MemoryCache",
    "NearCache",
    "RedisCache",
    "cache",
    "clear_namespaces",
    "configure",
    "namespace_of",
    "shutdown",
]
