"""Rate limits, generation concurrency limits and temporary bans, in memory or Redis.

Typical start-up::

    limits = await RateLimits.create(settings, connection)   # connection: None without Redis
    app = Starlette(routes=..., middleware=[
        Middleware(SessionMiddleware, manager=session_manager),
        Middleware(RateLimitMiddleware, rules=[Rule(limits.chat, "/api/chat", {"POST"})]),
    ])
    ...
    try:
        async with limits.generation(limits.identity(request.scope)):
            ...  # at most CHAT_CONCURRENCY_LIMIT of these run per user, across instances
    except ConcurrencyLimitExceeded as exc:
        return refusal_response(concurrency_refusal(exc))   # 429 + Retry-After + JSON

See ``docs/ratelimits.md``.
"""

from chatscale.ratelimit import _extra  # noqa: F401  (names the extra when one is missing)
from chatscale.ratelimit.bans import BanPolicy, MemoryBans, RedisBans, Violation
from chatscale.ratelimit.concurrency import (
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    Lease,
    MemoryConcurrency,
    RedisConcurrency,
)
from chatscale.ratelimit.factory import RateLimits
from chatscale.ratelimit.guard import (
    RateGuard,
    RateLimitExceeded,
    Refusal,
    concurrency_refusal,
    rate_limited,
    refusal_exception_handler,
    refusal_response,
)
from chatscale.ratelimit.identity import Identity, TrustedProxies, client_address, identify
from chatscale.ratelimit.limiter import Decision, RateLimiter, parse_limits
from chatscale.ratelimit.middleware import RateLimitMiddleware, Rule
from chatscale.ratelimit.storage import close_limits_storage, create_limits_storage

__all__ = [
    "BanPolicy",
    "ConcurrencyLimitExceeded",
    "ConcurrencyLimiter",
    "Decision",
    "Identity",
    "Lease",
    "MemoryBans",
    "MemoryConcurrency",
    "RateGuard",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "RateLimiter",
    "RateLimits",
    "RedisBans",
    "RedisConcurrency",
    "Refusal",
    "Rule",
    "TrustedProxies",
    "Violation",
    "client_address",
    "close_limits_storage",
    "concurrency_refusal",
    "create_limits_storage",
    "identify",
    "parse_limits",
    "rate_limited",
    "refusal_exception_handler",
    "refusal_response",
]
