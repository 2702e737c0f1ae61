"""Namespaced caches in process memory or on Redis."""

from chatscale.cache.namespaces import DEFAULT_FORCED_IN_MEMORY, DEFAULT_TTL, CacheKeys

__all__ = ["DEFAULT_FORCED_IN_MEMORY", "DEFAULT_TTL", "CacheKeys"]
