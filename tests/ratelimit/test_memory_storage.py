"""The memory storage of limits without Redis: expiry passes are throttled, windows still
count exactly, and expired windows are freed."""

from __future__ import annotations

import asyncio
import time

from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter

from chatscale.ratelimit import storage as storage_module
from chatscale.ratelimit.storage import ThrottledMemoryStorage, create_limits_storage


async def test_many_identities_cost_one_expiry_pass_per_period() -> None:
    storage = create_limits_storage(None)
    assert isinstance(storage, ThrottledMemoryStorage)
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(3, 1)
    started = time.monotonic()
    for i in range(1_500):
        assert await limiter.hit(item, "chat", f"user{i % 500}")
    # limits 5.8 itself starts a pass after every hit when none runs, each pass visiting
    # every window with one thread hop.
    assert storage.passes <= 1 + int(time.monotonic() - started)
    assert len(storage.events) == 500


async def test_windows_count_exactly_and_expired_ones_are_freed() -> None:
    storage = ThrottledMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(2, 1)
    assert await limiter.hit(item, "chat", "a")
    assert await limiter.hit(item, "chat", "a")
    assert not await limiter.hit(item, "chat", "a")
    await asyncio.sleep(1.05)
    assert await limiter.hit(item, "chat", "a")  # the window moved on
    await asyncio.sleep(1.05)
    assert await limiter.hit(item, "chat", "b")  # runs the next pass
    assert storage.passes == 3
    keys = list(storage.events)
    assert len(keys) == 1 and "/chat/b/" in keys[0], keys
    assert storage_module.EXPIRY_PERIOD_S == 1.0
