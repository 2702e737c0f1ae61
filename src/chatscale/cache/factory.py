"""Which backend serves each namespace, and the process's caches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatscale.cache.base import Cache
from chatscale.cache.clear import ClearOptions, clear_namespaces
from chatscale.cache.errors import CacheNamespaceError
from chatscale.cache.invalidation import Invalidator
from chatscale.cache.memory import MemoryCache
from chatscale.cache.namespaces import CacheKeys
from chatscale.cache.near import NearCache
from chatscale.cache.redis_backend import RedisCache

if TYPE_CHECKING:
    from chatscale.config import Settings
    from chatscale.redis import RedisConnection


def namespace_of(name: object) -> CacheKeys:
    """``name`` as a :class:`CacheKeys`; :class:`CacheNamespaceError` if it is none."""
    if isinstance(name, CacheKeys):
        return name
    if isinstance(name, str):
        try:
            return CacheKeys(name)
        except ValueError:
            pass
    valid = ", ".join(k.value for k in CacheKeys)
    raise CacheNamespaceError(f"unknown cache namespace {name!r}; valid names are {valid}")


def clear_options(settings: Settings) -> ClearOptions:
    """The clear tuning of ``settings``."""
    return ClearOptions(
        scan_count=settings.redis_scan_count,
        chunk_size=settings.redis_delete_chunk_size,
        cluster_safe=settings.redis_cluster_safe_delete,
    )


class CacheFactory:
    """Hands out one cache per namespace, on the backend the settings select.

    * memory when there is no Redis connection, or the namespace is listed in
      ``FORCED_IN_MEMORY_CACHE_NAMESPACES``;
    * Redis otherwise, with a near cache in front for ``NEAR_CACHE_NAMESPACES``.

    The factory owns the memory caches, the near caches and the process's one
    invalidation subscription; :meth:`close` stops them. The Redis connection belongs to
    the caller.
    """

    def __init__(self, settings: Settings, redis: RedisConnection | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.clear_options = clear_options(settings)
        self._caches: dict[CacheKeys, Cache] = {}
        self._invalidator: Invalidator | None = None

    def backend_of(self, namespace: CacheKeys | str) -> str:
        """``"memory"``, ``"redis"`` or ``"redis+near"`` for ``namespace``."""
        ns = namespace_of(namespace)
        if self.redis is None or ns in self.settings.forced_in_memory_cache_namespaces:
            return MemoryCache.backend
        if ns in self.settings.near_cache_namespaces:
            return NearCache.backend
        return RedisCache.backend

    @property
    def invalidator(self) -> Invalidator | None:
        """The invalidation subscription, once a near cache needed one."""
        return self._invalidator

    def cache(self, namespace: CacheKeys | str) -> Cache:
        """The cache of ``namespace`` (the same object on every call)."""
        ns = namespace_of(namespace)
        found = self._caches.get(ns)
        if found is not None:
            return found
        backend = self.backend_of(ns)
        made: Cache
        if backend == MemoryCache.backend:
            made = MemoryCache(ns, self.settings.memory_cache_max_entries)
        else:
            assert self.redis is not None
            inner = RedisCache(ns, self.redis, self.clear_options)
            if backend == NearCache.backend:
                if self._invalidator is None:
                    self._invalidator = Invalidator(self.redis)
                made = NearCache(
                    inner,
                    self._invalidator,
                    self.settings.near_cache_ttl / 1000,
                    self.settings.memory_cache_max_entries,
                )
            else:
                made = inner
        self._caches[ns] = made
        return made

    async def clear_all(self) -> int:
        """Clear every namespace of this deployment (memory ones in this process only).

        Redis namespaces are removed in one scan of the prefix and every instance's near
        caches are told to drop everything. Returns how many entries were removed.
        """
        total = 0
        redis_namespaces = []
        for ns in CacheKeys:
            if self.backend_of(ns) == MemoryCache.backend:
                total += await self.cache(ns).clear()
            else:
                redis_namespaces.append(ns)
        if self.redis is not None and redis_namespaces:
            try:
                total += await clear_namespaces(self.redis, redis_namespaces, self.clear_options)
            finally:
                await Invalidator(self.redis).publish(None)
                if self._invalidator is not None:
                    self._invalidator._drop_all()
        return total

    async def close(self) -> None:
        """Stop background tasks and the invalidation subscription (idempotent)."""
        for cache in self._caches.values():
            await cache.close()
        if self._invalidator is not None:
            await self._invalidator.close()
