"""All rate-limiting parts, built once at start-up from the settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from limits.aio.storage import Storage
from redis.exceptions import RedisError

from chatscale.config import Settings
from chatscale.errors import RedisUnavailableError
from chatscale.ratelimit.bans import BanPolicy, BanStore, MemoryBans, RedisBans
from chatscale.ratelimit.concurrency import (
    DEFAULT_LEASE_TTL_S,
    ConcurrencyBackend,
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    Lease,
    MemoryConcurrency,
    RedisConcurrency,
)
from chatscale.ratelimit.guard import RateGuard
from chatscale.ratelimit.identity import TrustedProxies
from chatscale.ratelimit.limiter import RateLimiter, parse_limits
from chatscale.ratelimit.storage import (
    close_limits_storage,
    create_limits_storage,
    limits_keepalive,
)
from chatscale.redis.connection import RedisConnection
from chatscale.redis.keepalive import KeepAlive


class RateLimits:
    """The chat rate limit, the generation concurrency limit and bans, on one backend.

    Build with :meth:`create`; close with :meth:`aclose`. ``chat`` is the guard for
    ``CHAT_RATE_LIMIT``; :meth:`guard` makes more guards (other routes, other limits) that
    share the storage and the ban list; :meth:`generation` holds a concurrency slot.
    """

    def __init__(
        self,
        storage: Storage,
        bans: BanPolicy,
        concurrency: ConcurrencyLimiter,
        trusted: TrustedProxies,
        chat_limit: str,
        *,
        anonymous_by_ip: bool = False,
    ) -> None:
        self.storage = storage
        #: REDIS_PING_INTERVAL's pings of the storage's connections (None when off).
        self.keepalive: KeepAlive | None = None
        self.bans = bans
        self.concurrency = concurrency
        self.trusted = trusted
        self.chat = self.guard(
            chat_limit, name="chat", variable="CHAT_RATE_LIMIT", anonymous_by_ip=anonymous_by_ip
        )

    @classmethod
    async def create(
        cls,
        settings: Settings,
        connection: RedisConnection | None = None,
        *,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        anonymous_by_ip: bool = False,
    ) -> RateLimits:
        """From the settings: Redis (``USE_REDIS``; pass the process's connection) or memory.

        ``anonymous_by_ip`` counts ``CHAT_RATE_LIMIT`` and the concurrency slots
        (:meth:`identity`) of anonymous sessions by client address, so that minting
        sessions buys no extra budget.

        Raises :class:`~chatscale.errors.ConfigError` for bad values and
        :class:`~chatscale.errors.RedisUnavailableError` when the counters' Redis does not
        answer.
        """
        trusted = TrustedProxies(settings.trusted_proxies)
        parse_limits(settings.chat_rate_limit)
        ban_store: BanStore
        backend: ConcurrencyBackend
        if settings.use_redis:
            if connection is None:
                raise ValueError("USE_REDIS=true: pass the process's RedisConnection")
            ban_store, backend = RedisBans(connection), RedisConcurrency(connection)
        else:
            ban_store, backend = MemoryBans(), MemoryConcurrency()
        storage = create_limits_storage(settings.redis if settings.use_redis else None)
        try:
            if not await storage.check():
                raise RedisUnavailableError("the rate-limit storage did not answer PING")
        except (RedisError, OSError) as exc:
            await close_limits_storage(storage)
            raise RedisUnavailableError(f"rate-limit storage unavailable: {exc}") from exc
        except BaseException:
            await close_limits_storage(storage)
            raise
        bans = BanPolicy(
            ban_store,
            violation_limit=settings.ban_violation_limit,
            ban_duration_s=settings.ban_duration,
        )
        concurrency = ConcurrencyLimiter(
            backend, settings.chat_concurrency_limit, lease_ttl_s=lease_ttl_s
        )
        limits = cls(
            storage,
            bans,
            concurrency,
            trusted,
            settings.chat_rate_limit,
            anonymous_by_ip=anonymous_by_ip,
        )
        limits.keepalive = limits_keepalive(storage, settings.redis if settings.use_redis else None)
        if limits.keepalive is not None:
            limits.keepalive.start()
        return limits

    def guard(
        self,
        limit: str,
        *,
        name: str,
        variable: str = "rate limit",
        anonymous_by_ip: bool = False,
    ) -> RateGuard:
        """A guard for ``limit`` (limits notation) counted under ``name``."""
        limiter = RateLimiter(self.storage, parse_limits(limit, variable), name)
        return RateGuard(limiter, self.bans, self.trusted, anonymous_by_ip=anonymous_by_ip)

    def identity(self, scope: Any) -> str:
        """Whom ``scope``'s request counts against (its session user, else its address)."""
        return self.chat.identity(scope)

    @contextlib.asynccontextmanager
    async def generation(self, identity: str) -> AsyncIterator[Lease]:
        """Hold one of ``identity``'s ``CHAT_CONCURRENCY_LIMIT`` generation slots.

        Raises :class:`ConcurrencyLimitExceeded` (counted as a violation) when all are in
        use; the slot is released when the body ends, however it ends.
        """
        try:
            lease = await self.concurrency.acquire(identity)
        except ConcurrencyLimitExceeded:
            await self.bans.violation(identity)
            raise
        try:
            yield lease
        finally:
            await asyncio.shield(self.concurrency.release(lease))

    async def aclose(self) -> None:
        """Close the counters' storage connections (the RedisConnection stays open)."""
        if self.keepalive is not None:
            await self.keepalive.stop()
        await close_limits_storage(self.storage)
