"""Idempotent chat starts: one ``client_request_id`` of one user starts one stream.

The mapping lives in Redis (IDEMPOTENCY keys) when Redis is used, so a retry that lands on
another instance gets the same stream. Two identical requests racing: the first claims the
id, the second waits (briefly) for the first one's answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Protocol

from chatscale.cache.namespaces import DEFAULT_TTL, CacheKeys
from chatscale.redis.connection import RedisConnection

Started = dict[str, Any]

_PENDING = b"pending"
#: How long a claim without result survives (a crashed instance must not block the id).
CLAIM_TTL_S = 30
_WAIT_S = 5.0
_TTL_S = int(DEFAULT_TTL[CacheKeys.IDEMPOTENCY] or 3600)


class StillStarting(Exception):
    """Another request with the same id is still starting its stream."""


class IdempotencyStore(Protocol):
    """Claims request ids and remembers what they started."""

    async def claim(self, user: str, request_id: str) -> Started | None:
        """None when this caller now owns the id; else what the first request started."""
        ...

    async def finish(self, user: str, request_id: str, started: Started) -> None:
        """Record what the owner of the id started."""
        ...

    async def release(self, user: str, request_id: str) -> None:
        """Forget a claim whose start failed, so a retry may try again."""
        ...


async def _wait_for(read: Any, user: str, request_id: str, wait_s: float) -> Started:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        value = await read(user, request_id)
        if value is None:
            break
        if value != _PENDING:
            started: Started = json.loads(value)
            return started
    raise StillStarting(request_id)


class MemoryIdempotencyStore:
    """Request ids of this process."""

    def __init__(self, ttl_s: float = _TTL_S, wait_s: float = _WAIT_S) -> None:
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self._entries: dict[tuple[str, str], tuple[float, bytes]] = {}

    async def _read(self, user: str, request_id: str) -> bytes | None:
        entry = self._entries.get((user, request_id))
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    async def claim(self, user: str, request_id: str) -> Started | None:
        """None when this caller now owns the id; else what the first request started."""
        now = time.monotonic()
        if len(self._entries) > 100_000:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        value = await self._read(user, request_id)
        if value is None:
            self._entries[(user, request_id)] = (now + CLAIM_TTL_S, _PENDING)
            return None
        if value == _PENDING:
            return await _wait_for(self._read, user, request_id, self.wait_s)
        started: Started = json.loads(value)
        return started

    async def finish(self, user: str, request_id: str, started: Started) -> None:
        """Record what the owner of the id started."""
        self._entries[(user, request_id)] = (
            time.monotonic() + self.ttl_s,
            json.dumps(started).encode(),
        )

    async def release(self, user: str, request_id: str) -> None:
        """Forget a failed claim."""
        self._entries.pop((user, request_id), None)


class RedisIdempotencyStore:
    """Request ids shared by every instance (SET NX with a time to live)."""

    def __init__(
        self, connection: RedisConnection, ttl_s: int = _TTL_S, wait_s: float = _WAIT_S
    ) -> None:
        self._connection = connection
        self._client = connection.client
        self._keys = connection.keys
        self.ttl_s = ttl_s
        self.wait_s = wait_s

    async def _read(self, user: str, request_id: str) -> bytes | None:
        value = await self._client.get(self._keys.idempotency(user, request_id))
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def claim(self, user: str, request_id: str) -> Started | None:
        """None when this caller now owns the id; else what the first request started."""
        key = self._keys.idempotency(user, request_id)
        if await self._client.set(key, _PENDING, nx=True, ex=CLAIM_TTL_S):
            return None
        value = await self._read(user, request_id)
        if value is None:  # the claim expired in between: try once more
            if await self._client.set(key, _PENDING, nx=True, ex=CLAIM_TTL_S):
                return None
            value = await self._read(user, request_id)
        if value is None or value == _PENDING:
            return await _wait_for(self._read, user, request_id, self.wait_s)
        started: Started = json.loads(value)
        return started

    async def finish(self, user: str, request_id: str, started: Started) -> None:
        """Record what the owner of the id started."""
        key, value = self._keys.idempotency(user, request_id), json.dumps(started)

        async def write(target: Any) -> Any:
            return await target.set(key, value, ex=self.ttl_s)

        # Written so that it survives a failover (chatscale.redis.replication): a record
        # lost with a master let a client's retried start begin the same answer again
        # (fault checker, Sentinel seed 2038: 560 tokens generated for 480).
        await self._connection.write_durably(write, "a request id's record")

    async def release(self, user: str, request_id: str) -> None:
        """Forget a failed claim."""
        await self._client.delete(self._keys.idempotency(user, request_id))


def create_idempotency_store(connection: RedisConnection | None) -> IdempotencyStore:
    """Redis when connected, else memory."""
    if connection is None:
        return MemoryIdempotencyStore()
    return RedisIdempotencyStore(connection)
