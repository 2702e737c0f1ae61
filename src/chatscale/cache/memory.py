"""The in-process backend: TTLs, an LRU bound and a background sweep of expired entries."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import OrderedDict

from chatscale.cache.base import Cache
from chatscale.cache.codec import INT64_MAX, INT64_MIN, as_int, decode
from chatscale.cache.errors import CacheTypeError
from chatscale.cache.namespaces import CacheKeys

log = logging.getLogger(__name__)

_NEVER = float("inf")
#: Seconds between two sweeps of expired entries.
SWEEP_INTERVAL_S = 1.0
#: Most expired entries removed per sweep step before yielding to the event loop.
SWEEP_BATCH = 1_000


class MemoryCache(Cache):
    """One namespace held in this process's memory.

    Values are kept encoded (exactly as Redis would hold them) so callers never share
    mutable objects with the cache and both backends accept and return the same values.
    At most ``max_entries`` are kept: writing one more evicts the least recently used.
    Expired entries are invisible at once and removed by a background sweep (started on
    the first write with a TTL while an event loop runs; :meth:`close` stops it).
    """

    backend = "memory"

    def __init__(
        self,
        namespace: CacheKeys,
        max_entries: int = 100_000,
        *,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        super().__init__(namespace)
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.sweep_interval_s = sweep_interval_s
        # key -> (encoded value, monotonic expiry or inf); order = recency of use.
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        # (expiry, key) of every entry written with a TTL; stale pairs are skipped.
        self._expiries: list[tuple[float, str]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    # --- helpers ---------------------------------------------------------------------------
    def _live(self, key: str, now: float) -> tuple[bytes, float] | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._data[key]
            return None
        return entry

    def _store(self, key: str, data: bytes, expires: float) -> None:
        self._data[key] = (data, expires)
        self._data.move_to_end(key)
        if expires != _NEVER:
            heapq.heappush(self._expiries, (expires, key))
            self._ensure_sweeper()
            if len(self._expiries) > 2 * len(self._data) + 1_024:
                self._compact()
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self.evictions += 1

    def _compact(self) -> None:
        self._expiries = [(e, k) for k, (_, e) in self._data.items() if e != _NEVER]
        heapq.heapify(self._expiries)

    @staticmethod
    def _deadline(ttl_ms: int | None, now: float) -> float:
        return _NEVER if ttl_ms is None else now + ttl_ms / 1000

    def _ensure_sweeper(self) -> None:
        if self._sweeper is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: reads still hide expired entries
        self._sweeper = loop.create_task(self._sweep_forever(), name=f"cache-sweep-{self}")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                while True:
                    if self.sweep(SWEEP_BATCH) < SWEEP_BATCH:
                        break
                    await asyncio.sleep(0)
            except Exception:  # the sweeper must survive anything
                log.exception("cache sweep failed")

    def sweep(self, limit: int = SWEEP_BATCH) -> int:
        """Remove up to ``limit`` expired entries now; returns how many were removed."""
        now = time.monotonic()
        heap = self._expiries
        removed = 0
        while heap and heap[0][0] <= now and removed < limit:
            expires, key = heapq.heappop(heap)
            entry = self._data.get(key)
            if entry is not None and entry[1] == expires:
                del self._data[key]
                removed += 1
        return removed

    # --- primitives --------------------------------------------------------------------
    async def _get(self, key: str) -> bytes | None:
        entry = self._live(key, time.monotonic())
        if entry is None:
            return None
        self._data.move_to_end(key)
        return entry[0]

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        return [await self._get(k) for k in keys]

    async def _set(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        self._store(key, data, self._deadline(ttl_ms, time.monotonic()))

    async def _set_many(self, items: list[tuple[str, bytes]], ttl_ms: int | None) -> None:
        expires = self._deadline(ttl_ms, time.monotonic())
        for key, data in items:
            self._store(key, data, expires)

    async def _add(self, key: str, data: bytes, ttl_ms: int | None) -> bool:
        now = time.monotonic()
        if self._live(key, now) is not None:
            return False
        self._store(key, data, self._deadline(ttl_ms, now))
        return True

    async def _compare_and_set(
        self, key: str, expected: bytes, data: bytes, ttl_ms: int | None
    ) -> bool:
        now = time.monotonic()
        entry = self._live(key, now)
        if entry is None or entry[0] != expected:
            return False
        self._store(key, data, self._deadline(ttl_ms, now))
        return True

    async def _incr(self, key: str, amount: int, ttl_ms: int | None) -> int:
        now = time.monotonic()
        entry = self._live(key, now)
        if entry is None:
            current, expires = 0, self._deadline(ttl_ms, now)
        else:
            current, expires = as_int(decode(entry[0], key), key), entry[1]
        total = current + amount
        if not INT64_MIN <= total <= INT64_MAX:
            raise CacheTypeError(f"cannot incr {key!r}: the result would overflow 64 bits")
        if entry is None:
            self._store(key, str(total).encode(), expires)
        else:
            # Same expiry as before: no new heap entry needed.
            self._data[key] = (str(total).encode(), expires)
            self._data.move_to_end(key)
        return total

    async def _delete(self, key: str) -> bool:
        return self._live(key, time.monotonic()) is not None and (
            self._data.pop(key, None) is not None
        )

    async def _clear(self) -> int:
        now = time.monotonic()
        count = sum(1 for _, expires in self._data.values() if expires > now)
        self._data.clear()
        self._expiries.clear()
        return count

    async def close(self) -> None:
        """Stop the background sweep (the data stays readable)."""
        self._closed = True
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
