"""At most N running generations per user, across every instance.

A holder takes a *lease*: a member of the user's ZSET scored with its expiry time. It
renews the lease while it runs and removes it when it ends (finish, abort or error: the
async context manager releases in ``finally``). A process that dies without releasing
frees its slot when the lease expires: every acquire prunes expired members first, inside
the same Lua script, so the check and the insert are one atomic step on Redis's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from redis.commands.core import AsyncScript

from chatscale.failures import FailureLog
from chatscale.ratelimit.scripts import lua
from chatscale.redis.connection import RedisConnection
from chatscale.tasks import stop_task

log = logging.getLogger("chatscale.ratelimit")

DEFAULT_LEASE_TTL_S = 60.0


#: A limit no count reaches (slots taken over from a stopped instance).
_UNLIMITED = 2**31 - 1


class ConcurrencyLimitExceeded(Exception):
    """The user already runs the allowed number of generations."""

    def __init__(self, user: str, limit: int, running: int, retry_after: int) -> None:
        self.user = user
        self.limit = limit
        self.running = running
        self.retry_after = retry_after
        super().__init__(f"{running} generations already running (limit {limit})")


@dataclass(frozen=True)
class Acquired:
    """The outcome of one acquire attempt."""

    ok: bool
    running: int
    #: Milliseconds until the oldest lease would expire if its holder stopped renewing.
    oldest_expires_ms: int = 0


class ConcurrencyBackend(Protocol):
    """Atomic lease operations on one user's set of running generations."""

    async def acquire(self, user: str, lease: str, limit: int, ttl_ms: int) -> Acquired:
        """Add ``lease`` if fewer than ``limit`` unexpired leases exist."""
        ...

    async def renew(self, user: str, lease: str, limit: int, ttl_ms: int) -> int:
        """1 renewed, 2 expired but taken again, 0 lost (no room left)."""
        ...

    async def release(self, user: str, lease: str) -> int:
        """Remove ``lease``; return how many remain."""
        ...

    async def running(self, user: str) -> int:
        """How many unexpired leases ``user`` holds."""
        ...


class MemoryConcurrency:
    """Leases in this process's memory (one instance)."""

    def __init__(self) -> None:
        self._leases: dict[str, dict[str, float]] = {}

    def _live(self, user: str) -> dict[str, float]:
        now = time.monotonic()
        leases = self._leases.get(user, {})
        live = {k: v for k, v in leases.items() if v > now}
        if live:
            self._leases[user] = live
        else:
            self._leases.pop(user, None)
        return live

    async def acquire(self, user: str, lease: str, limit: int, ttl_ms: int) -> Acquired:
        """See :meth:`ConcurrencyBackend.acquire`."""
        live = self._live(user)
        now = time.monotonic()
        if lease not in live and len(live) >= limit:
            oldest = min(live.values())
            return Acquired(False, len(live), max(0, int((oldest - now) * 1000)))
        live[lease] = now + ttl_ms / 1000
        self._leases[user] = live
        return Acquired(True, len(live))

    async def renew(self, user: str, lease: str, limit: int, ttl_ms: int) -> int:
        """See :meth:`ConcurrencyBackend.renew`."""
        live = self._live(user)
        status = 1
        if lease not in live:
            if len(live) >= limit:
                return 0
            status = 2
        live[lease] = time.monotonic() + ttl_ms / 1000
        self._leases[user] = live
        return status

    async def release(self, user: str, lease: str) -> int:
        """See :meth:`ConcurrencyBackend.release`."""
        self._leases.get(user, {}).pop(lease, None)
        return len(self._live(user))

    async def running(self, user: str) -> int:
        """See :meth:`ConcurrencyBackend.running`."""
        return len(self._live(user))


class RedisConcurrency:
    """Leases in Redis: ``<prefix>::conc:{<user>}:running`` (one key, so Cluster-safe)."""

    def __init__(self, connection: RedisConnection) -> None:
        self._conn = connection
        client = connection.client
        self._acquire: AsyncScript = client.register_script(lua("concurrency_acquire"))
        self._renew: AsyncScript = client.register_script(lua("concurrency_renew"))
        self._release: AsyncScript = client.register_script(lua("concurrency_release"))

    async def acquire(self, user: str, lease: str, limit: int, ttl_ms: int) -> Acquired:
        """See :meth:`ConcurrencyBackend.acquire`."""
        key = self._conn.keys.concurrency(user)
        reply = await self._acquire(keys=[key], args=[lease, limit, ttl_ms])
        if int(reply[0]) == 1:
            return Acquired(True, int(reply[1]))
        return Acquired(False, int(reply[1]), int(reply[2]))

    async def renew(self, user: str, lease: str, limit: int, ttl_ms: int) -> int:
        """See :meth:`ConcurrencyBackend.renew`."""
        key = self._conn.keys.concurrency(user)
        return int(await self._renew(keys=[key], args=[lease, limit, ttl_ms]))

    async def release(self, user: str, lease: str) -> int:
        """See :meth:`ConcurrencyBackend.release`."""
        key = self._conn.keys.concurrency(user)
        return int(await self._release(keys=[key], args=[lease]))

    async def running(self, user: str) -> int:
        """See :meth:`ConcurrencyBackend.running`."""
        key = self._conn.keys.concurrency(user)
        now_ms = math.floor(time.time() * 1000)
        return int(await self._conn.client.zcount(key, now_ms + 1, "+inf"))


@dataclass
class Lease:
    """One held generation slot; ``lost`` turns true if renewal found it taken by others."""

    user: str
    id: str
    running: int
    lost: bool = False
    _renewer: asyncio.Task[None] | None = field(default=None, repr=False)


class ConcurrencyLimiter:
    """``async with limiter.hold(user):`` around a generation.

    ``limit`` 0 means unlimited (nothing is stored). Raises
    :class:`ConcurrencyLimitExceeded` when the user is at the limit.
    """

    def __init__(
        self,
        backend: ConcurrencyBackend,
        limit: int,
        *,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        retry_after_s: int = 2,
    ) -> None:
        if limit < 0:
            raise ValueError("limit must be 0 (unlimited) or more")
        if lease_ttl_s <= 0:
            raise ValueError("lease_ttl_s must be positive")
        self.backend = backend
        self.limit = limit
        self.lease_ttl_ms = max(1, int(lease_ttl_s * 1000))
        self.retry_after_s = retry_after_s
        # One summary for every lease this limiter renews (many fail at once in an outage).
        self._renewals = FailureLog(log, "renewing generation leases")

    async def acquire(self, user: str) -> Lease:
        """Take a slot (and start renewing it) or raise :class:`ConcurrencyLimitExceeded`.

        Prefer :meth:`hold`; a caller of ``acquire`` must call :meth:`release`.
        """
        lease_id = secrets.token_hex(12)
        if self.limit == 0:
            return Lease(user, lease_id, 0)
        outcome = await self.backend.acquire(user, lease_id, self.limit, self.lease_ttl_ms)
        if not outcome.ok:
            raise ConcurrencyLimitExceeded(user, self.limit, outcome.running, self.retry_after_s)
        lease = Lease(user, lease_id, outcome.running)
        lease._renewer = asyncio.create_task(self._renew_forever(lease))
        return lease

    async def adopt(self, user: str) -> Lease:
        """Take a slot for a generation admitted elsewhere (continued after its instance
        stopped), even above the limit: the dead instance's slot counts until it expires.
        A caller must call :meth:`release`."""
        lease_id = secrets.token_hex(12)
        if self.limit == 0:
            return Lease(user, lease_id, 0)
        outcome = await self.backend.acquire(user, lease_id, _UNLIMITED, self.lease_ttl_ms)
        lease = Lease(user, lease_id, outcome.running)
        lease._renewer = asyncio.create_task(self._renew_forever(lease))
        return lease

    async def release(self, lease: Lease) -> None:
        """Stop renewing and give the slot back (safe to call twice)."""
        renewer, lease._renewer = lease._renewer, None
        # Cancelled until it ends: one cancel can be lost in a Redis call under way (see
        # stop_task), and the renewer would then renew for ever, and this wait with it.
        await stop_task(renewer)
        if self.limit == 0:
            return
        await self.backend.release(lease.user, lease.id)

    @contextlib.asynccontextmanager
    async def hold(self, user: str) -> AsyncIterator[Lease]:
        """Hold one slot for the body; released however the body ends (even cancelled)."""
        lease = await self.acquire(user)
        try:
            yield lease
        finally:
            # Shielded: a cancelled generation (abort, client gone) must still give the
            # slot back, not leave it to the lease TTL.
            await asyncio.shield(self.release(lease))

    async def running(self, user: str) -> int:
        """How many generations ``user`` runs now (on every instance)."""
        return await self.backend.running(user) if self.limit else 0

    async def _renew_forever(self, lease: Lease) -> None:
        interval = self.lease_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                status = await self.backend.renew(
                    lease.user, lease.id, self.limit, self.lease_ttl_ms
                )
            except Exception as exc:  # a Redis hiccup: try again next round, before expiry
                self._renewals.failed(exc)
                continue
            self._renewals.succeeded()
            lease.lost = status == 0
            if lease.lost:
                log.warning("generation lease of %s expired and its slot was taken", lease.user)
