"""Where sessions live: process memory (one instance) or Redis (every instance).

A store deals only in hashed ids and opaque JSON text; signing, identity and change tracking
are the manager's business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from chatscale.redis.connection import RedisConnection


@dataclass(frozen=True)
class StoredSession:
    """A session as read from the store."""

    state: str
    #: Seconds until the store forgets it (sliding expiry refreshes this).
    ttl_left: float


class SessionStore(Protocol):
    """The four operations the session manager needs."""

    async def load(self, id_hash: str) -> StoredSession | None:
        """The session stored under ``id_hash``, or ``None`` (absent or expired)."""
        ...

    async def save(self, id_hash: str, state: str, ttl: int) -> None:
        """Store ``state`` for ``ttl`` seconds (replacing any previous one)."""
        ...

    async def touch(self, id_hash: str, ttl: int) -> None:
        """Restart the expiry of an unchanged session."""
        ...

    async def delete(self, id_hash: str) -> None:
        """Forget a session (no error if it is already gone)."""
        ...

    async def aclose(self) -> None:
        """Release resources the store owns (not a shared Redis connection)."""
        ...


class MemorySessionStore:
    """Sessions in this process's memory: for a single instance, tests and development.

    Expired entries are dropped when read and swept every ``sweep_every`` writes, so the
    dictionary does not grow with sessions nobody comes back to. Beyond ``max_entries``
    live sessions the oldest-created are dropped (a flood of cookie-less clients cannot
    exhaust the process's memory).
    """

    def __init__(self, *, sweep_every: int = 1_000, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._items: dict[str, tuple[str, float]] = {}
        self._writes = 0
        self._sweep_every = sweep_every
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._items)

    async def load(self, id_hash: str) -> StoredSession | None:
        """See :meth:`SessionStore.load`."""
        item = self._items.get(id_hash)
        if item is None:
            return None
        state, deadline = item
        left = deadline - time.monotonic()
        if left <= 0:
            del self._items[id_hash]
            return None
        return StoredSession(state, left)

    async def save(self, id_hash: str, state: str, ttl: int) -> None:
        """See :meth:`SessionStore.save`."""
        self._items[id_hash] = (state, time.monotonic() + ttl)
        self._writes += 1
        if self._writes % self._sweep_every == 0 or len(self._items) > self._max_entries:
            self._sweep()
        while len(self._items) > self._max_entries:
            del self._items[next(iter(self._items))]

    async def touch(self, id_hash: str, ttl: int) -> None:
        """See :meth:`SessionStore.touch`."""
        item = self._items.get(id_hash)
        if item is not None:
            self._items[id_hash] = (item[0], time.monotonic() + ttl)

    async def delete(self, id_hash: str) -> None:
        """See :meth:`SessionStore.delete`."""
        self._items.pop(id_hash, None)

    async def aclose(self) -> None:
        """Drop every session."""
        self._items.clear()

    def _sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, deadline) in self._items.items() if deadline <= now]:
            del self._items[key]


class RedisSessionStore:
    """Sessions in Redis, one string key per session: ``<prefix>::sess:<sha256(id)>``.

    Reading is one round trip (GET and PTTL pipelined on the same key, so it works on
    Cluster too); saving is one ``SET ... EX`` (followed, when the master has replicas, by a
    ``WAIT`` for one of them); a touch is one ``EXPIRE``.
    """

    def __init__(self, connection: RedisConnection) -> None:
        self._conn = connection

    async def load(self, id_hash: str) -> StoredSession | None:
        """See :meth:`SessionStore.load`."""
        key = self._conn.keys.session(id_hash)
        async with self._conn.client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, pttl = await pipe.execute()
        if raw is None:
            return None
        try:
            state = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        # PTTL -1 (no expiry) cannot come from this store; treat it as due for a refresh.
        left = pttl / 1000 if isinstance(pttl, int) and pttl > 0 else 0.0
        return StoredSession(state, left)

    async def save(self, id_hash: str, state: str, ttl: int) -> None:
        """See :meth:`SessionStore.save`."""
        key, value = self._conn.keys.session(id_hash), state.encode()

        async def write(target: Any) -> Any:
            return await target.set(key, value, ex=ttl)

        # A session lost in a failover is the way back to one's conversations lost: it is
        # written so that it survives one (chatscale.redis.replication).
        await self._conn.write_durably(write, "a session")

    async def touch(self, id_hash: str, ttl: int) -> None:
        """See :meth:`SessionStore.touch`."""
        await self._conn.client.expire(self._conn.keys.session(id_hash), ttl)

    async def delete(self, id_hash: str) -> None:
        """See :meth:`SessionStore.delete`."""
        await self._conn.client.delete(self._conn.keys.session(id_hash))

    async def aclose(self) -> None:
        """Nothing to do: the connection belongs to the application."""
