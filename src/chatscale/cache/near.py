"""A near cache: a short-lived copy in process memory in front of a Redis namespace.

Guarantee: once a write or clear through any instance has returned, another instance
serves the old value only until the invalidation published by that write reaches it (the
pub/sub delivery time, typically well under a millisecond on a LAN). When the
subscription is not known to be healthy (not yet subscribed, connection lost, keep-alive
ping unanswered), the near cache is emptied and reads go straight to Redis; a read that
overlaps an invalidation or a reconnect is served but not kept. Independently of all
that, no entry is served more than ``NEAR_CACHE_TTL`` after the Redis read that fetched
it began — the bound that still holds if a link dies silently and nothing detects it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Iterable
from typing import TypeVar

from chatscale.cache.base import Cache
from chatscale.cache.invalidation import Invalidator
from chatscale.cache.redis_backend import RedisCache

T = TypeVar("T")


class NearCache(Cache):
    """Reads through a process-local copy; writes go to Redis and invalidate everywhere."""

    backend = "redis+near"

    def __init__(
        self, inner: RedisCache, invalidator: Invalidator, ttl_s: float, max_entries: int
    ) -> None:
        super().__init__(inner.namespace)
        self.inner = inner
        self.invalidator = invalidator
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        # key -> (encoded value or None for "absent", monotonic deadline)
        self._local: dict[str, tuple[bytes | None, float]] = {}
        self._epoch = 0
        self.hits = 0
        self.misses = 0
        invalidator.add_listener(inner.namespace.value, self)

    def __len__(self) -> int:
        return len(self._local)

    def invalidate(self, keys: Iterable[str] | None) -> None:
        """Forget ``keys`` (``None``: everything); reads in flight will not be kept."""
        self._epoch += 1
        if keys is None:
            self._local.clear()
            return
        for key in keys:
            self._local.pop(key, None)

    def _remember(
        self, key: str, data: bytes | None, deadline: float, stamp: tuple[int, int]
    ) -> None:
        inv = self.invalidator
        if not inv.ready or stamp != (inv.generation, self._epoch):
            return
        if len(self._local) >= self.max_entries and key not in self._local:
            # Evict the oldest insertion: cheap, and entries live for NEAR_CACHE_TTL only.
            self._local.pop(next(iter(self._local)))
        self._local[key] = (data, deadline)

    async def _get(self, key: str) -> bytes | None:
        inv = self.invalidator
        now = time.monotonic()
        if inv.ready:
            entry = self._local.get(key)
            if entry is not None and entry[1] > now:
                self.hits += 1
                return entry[0]
        else:
            inv.ensure_started()
        self.misses += 1
        stamp = (inv.generation, self._epoch)
        data = await self.inner._get(key)
        self._remember(key, data, now + self.ttl_s, stamp)
        return data

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        inv = self.invalidator
        now = time.monotonic()
        found: dict[str, bytes | None] = {}
        if inv.ready:
            for key in keys:
                entry = self._local.get(key)
                if entry is not None and entry[1] > now:
                    found[key] = entry[0]
        else:
            inv.ensure_started()
        missing = [k for k in keys if k not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            stamp = (inv.generation, self._epoch)
            fetched = await self.inner._get_many(missing)
            for key, data in zip(missing, fetched, strict=True):
                found[key] = data
                self._remember(key, data, now + self.ttl_s, stamp)
        return [found[k] for k in keys]

    async def _write(self, keys: list[str] | None, operation: Awaitable[T]) -> T:
        # Invalidate even when the write failed: it may have reached Redis (a timeout).
        try:
            result = await operation
        except BaseException:
            self.invalidate(keys)
            with contextlib.suppress(Exception):
                await self.invalidator.publish(self.namespace.value, keys)
            raise
        self.invalidate(keys)
        await self.invalidator.publish(self.namespace.value, keys)
        return result

    async def _set(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        await self._write([key], self.inner._set(key, data, ttl_ms))

    async def _set_many(self, items: list[tuple[str, bytes]], ttl_ms: int | None) -> None:
        await self._write([k for k, _ in items], self.inner._set_many(items, ttl_ms))

    async def _add(self, key: str, data: bytes, ttl_ms: int | None) -> bool:
        return await self._write([key], self.inner._add(key, data, ttl_ms))

    async def _compare_and_set(
        self, key: str, expected: bytes, data: bytes, ttl_ms: int | None
    ) -> bool:
        return await self._write([key], self.inner._compare_and_set(key, expected, data, ttl_ms))

    async def _incr(self, key: str, amount: int, ttl_ms: int | None) -> int:
        return await self._write([key], self.inner._incr(key, amount, ttl_ms))

    async def _delete(self, key: str) -> bool:
        return await self._write([key], self.inner._delete(key))

    async def _clear(self) -> int:
        return await self._write(None, self.inner._clear())
