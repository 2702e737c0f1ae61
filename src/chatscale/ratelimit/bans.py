"""Violations counted per identity, and the temporary ban they lead to.

Every refused request (rate or concurrency limit) is a violation. ``BAN_VIOLATION_LIMIT``
violations within the counting window ban the identity for ``BAN_DURATION`` seconds; the
count starts again after a ban. In Redis both keys share the identity's hash tag, so one Lua
script counts and bans atomically, on every topology.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from redis.commands.core import AsyncScript

from chatscale.cache.namespaces import DEFAULT_TTL, CacheKeys
from chatscale.ratelimit.scripts import lua
from chatscale.redis.connection import RedisConnection

#: Violations older than this are forgotten (LibreChat's VIOLATIONS lifetime).
DEFAULT_VIOLATION_WINDOW_S = int(DEFAULT_TTL[CacheKeys.VIOLATIONS] or 3_600)


@dataclass(frozen=True)
class Violation:
    """The outcome of recording one violation."""

    count: int
    #: Seconds of ban this violation started (0: not banned by it).
    banned_for: int


class BanStore(Protocol):
    """Where violation counts and bans live."""

    async def record(self, identity: str, limit: int, window_s: int, ban_s: int) -> Violation:
        """Count a violation; ban when the count reaches ``limit`` (0: never)."""
        ...

    async def ban_left(self, identity: str) -> int:
        """Whole seconds of ban left (0: not banned)."""
        ...

    async def lift(self, identity: str) -> None:
        """End a ban and forget the violations (an administrator's pardon)."""
        ...


class MemoryBans:
    """Violations and bans in this process's memory."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._bans: dict[str, float] = {}

    async def record(self, identity: str, limit: int, window_s: int, ban_s: int) -> Violation:
        """See :meth:`BanStore.record`."""
        now = time.monotonic()
        count, deadline = self._counts.get(identity, (0, 0.0))
        count = count + 1 if deadline > now else 1
        if limit > 0 and count >= limit:
            self._counts.pop(identity, None)
            self._bans[identity] = now + ban_s
            return Violation(count, ban_s)
        self._counts[identity] = (count, now + window_s)
        return Violation(count, 0)

    async def ban_left(self, identity: str) -> int:
        """See :meth:`BanStore.ban_left`."""
        until = self._bans.get(identity)
        if until is None:
            return 0
        left = until - time.monotonic()
        if left <= 0:
            del self._bans[identity]
            return 0
        return math.ceil(left)

    async def lift(self, identity: str) -> None:
        """See :meth:`BanStore.lift`."""
        self._bans.pop(identity, None)
        self._counts.pop(identity, None)


class RedisBans:
    """Violations and bans in Redis (``<prefix>::conc:{<identity>}:violations`` / ``:ban``)."""

    def __init__(self, connection: RedisConnection) -> None:
        self._conn = connection
        self._record: AsyncScript = connection.client.register_script(lua("violation"))

    async def record(self, identity: str, limit: int, window_s: int, ban_s: int) -> Violation:
        """See :meth:`BanStore.record`."""
        keys = self._conn.keys
        reply = await self._record(
            keys=[keys.violations(identity), keys.ban(identity)], args=[limit, window_s, ban_s]
        )
        return Violation(int(reply[0]), int(reply[1]))

    async def ban_left(self, identity: str) -> int:
        """See :meth:`BanStore.ban_left`."""
        pttl = await self._conn.client.pttl(self._conn.keys.ban(identity))
        return math.ceil(pttl / 1000) if pttl > 0 else 0

    async def lift(self, identity: str) -> None:
        """See :meth:`BanStore.lift`."""
        keys = self._conn.keys
        # Two keys of one slot: one DEL is fine on Cluster too.
        await self._conn.client.delete(keys.ban(identity), keys.violations(identity))


class BanPolicy:
    """``BAN_VIOLATION_LIMIT`` and ``BAN_DURATION`` applied to a :class:`BanStore`."""

    def __init__(
        self,
        store: BanStore,
        *,
        violation_limit: int,
        ban_duration_s: int,
        window_s: int = DEFAULT_VIOLATION_WINDOW_S,
    ) -> None:
        self.store = store
        self.violation_limit = violation_limit
        self.ban_duration_s = ban_duration_s
        self.window_s = window_s

    @property
    def enabled(self) -> bool:
        """Whether violations can lead to bans (``BAN_VIOLATION_LIMIT`` above 0)."""
        return self.violation_limit > 0

    @property
    def local(self) -> bool:
        """Whether a ban check needs no round trip (bans disabled, or kept in memory)."""
        return not self.enabled or isinstance(self.store, MemoryBans)

    async def violation(self, identity: str) -> Violation:
        """Record one violation of ``identity`` (no-op when bans are disabled)."""
        if not self.enabled:
            return Violation(0, 0)
        return await self.store.record(
            identity, self.violation_limit, self.window_s, self.ban_duration_s
        )

    async def ban_left(self, identity: str) -> int:
        """Seconds of ban ``identity`` has left (0 when free or when bans are disabled)."""
        return await self.store.ban_left(identity) if self.enabled else 0
