"""Request rate limits (the ``limits`` library's moving window) with the time to retry."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from chatscale.errors import ConfigError
from chatscale.redis.keys import escape


def parse_limits(text: str, variable: str = "CHAT_RATE_LIMIT") -> list[RateLimitItem]:
    """Parse limits notation (``"30/minute"``, ``"5/second; 100/hour"``) or raise ConfigError."""
    expected = "limits notation such as 30/minute or '10/second; 300/hour', amounts above 0"
    try:
        items = parse_many(text)
    except ValueError:
        raise ConfigError(variable, text, "is not a rate limit", expected) from None
    if not items or any(item.amount < 1 for item in items):
        raise ConfigError(variable, text, "allows no request at all", expected)
    return items


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit."""

    allowed: bool
    #: Whole seconds until a request would be admitted again (0 when allowed).
    retry_after: int
    #: The limit that refused the hit, in words (empty when allowed).
    limit: str = ""


class RateLimiter:
    """Counts hits per identity against one or more limits, in a shared ``limits`` storage.

    The moving window is exact: with ``10/minute`` no 60-second span ever admits more than
    10 hits for one identity, whichever instance receives them (every instance counts in the
    same Redis keys, updated atomically by ``limits``' Lua scripts).
    """

    def __init__(self, storage: Storage, items: list[RateLimitItem], name: str) -> None:
        if not items:
            raise ValueError("a rate limiter needs at least one limit")
        self.storage = storage
        self.items = items
        self.name = escape(name)
        self._strategy = MovingWindowRateLimiter(storage)

    @property
    def local(self) -> bool:
        """Whether the counters live in this process (a hit needs no round trip)."""
        return isinstance(self.storage, MemoryStorage)

    @property
    def description(self) -> str:
        """The limits in words, e.g. ``30 per 1 minute``."""
        return ", ".join(str(item) for item in self.items)

    async def hit(self, identity: str) -> Decision:
        """Count one request of ``identity``; refused hits are not counted."""
        ident = escape(identity)
        for item in self.items:
            if not await self._strategy.hit(item, self.name, ident):
                # Limits already hit stay consumed, as in ``limits``' own multi-limit use:
                # a refused request still spent the shorter windows checked before it.
                retry = await self._retry_after(item, ident)
                return Decision(False, retry, str(item))
        return Decision(True, 0)

    async def _retry_after(self, item: RateLimitItem, ident: str) -> int:
        stats = await self._strategy.get_window_stats(item, self.name, ident)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def clear(self, identity: str) -> None:
        """Forget ``identity``'s hits (an administrator's reset)."""
        for item in self.items:
            await self._strategy.clear(item, self.name, escape(identity))
