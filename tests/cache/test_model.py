"""Memory and Redis backends agree on random operation sequences (hypothesis)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from chatscale.cache import Cache, CacheError, CacheKeys, MemoryCache, RedisCache
from chatscale.cache.clear import ClearOptions
from chatscale.redis import RedisConnection, connect
from tests.conftest import redis_config, unique_prefix

KEYS = st.sampled_from(["a", "b", "c", ":", "*", "é", ""])
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
# Few distinct simple values, so that equal and unequal compare-and-set both happen often.
COMMON = st.sampled_from([None, 0, 1, -1, 1.0, True, "", "x", b"", b"x", [], {}, [1], {"a": 1}])
VALUES = COMMON | JSON | st.binary(max_size=8) | st.tuples(st.integers())  # tuples: refused
SMALL_INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.integers(-3, 3)
TTLS = st.sampled_from([None, 1_000.0])


def _outcome(run: Callable[[], Awaitable[Any]], loop: asyncio.Runner) -> tuple[str, Any]:
    try:
        return "ok", loop.run(run())  # type: ignore[arg-type]
    except CacheError as exc:
        return "error", type(exc).__name__


class CacheModel(RuleBasedStateMachine):
    """Runs each operation on both backends and compares every result."""

    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.Runner()
        self.connection: RedisConnection = self.loop.run(
            connect(redis_config(self.url, prefix=unique_prefix()))
        )
        self.memory: Cache = MemoryCache(CacheKeys.ROLES)
        self.redis: Cache = RedisCache(CacheKeys.ROLES, self.connection, ClearOptions())

    def both(self, call: Callable[[Cache], Awaitable[Any]]) -> Any:
        expected = _outcome(lambda: call(self.memory), self.loop)
        actual = _outcome(lambda: call(self.redis), self.loop)
        assert actual == expected, (actual, expected)
        return expected

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set(self, key: str, value: Any, ttl: float | None) -> None:
        self.both(lambda c: c.set(key, value, ttl=ttl))

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        self.both(lambda c: c.get(key, "<missing>"))

    @rule(keys=st.lists(KEYS, max_size=4))
    def get_many(self, keys: list[str]) -> None:
        self.both(lambda c: c.get_many(keys))

    @rule(items=st.dictionaries(KEYS, VALUES, max_size=3), ttl=TTLS)
    def set_many(self, items: dict[str, Any], ttl: float | None) -> None:
        self.both(lambda c: c.set_many(items, ttl=ttl))

    @rule(key=KEYS, value=VALUES)
    def add(self, key: str, value: Any) -> None:
        self.both(lambda c: c.add(key, value))

    @rule(key=KEYS, value=VALUES, use_current=st.booleans(), other=VALUES)
    def compare_and_set(self, key: str, value: Any, use_current: bool, other: Any) -> None:
        current = self.loop.run(self.memory.get(key, "<missing>"))
        expected = current if use_current and current != "<missing>" else other
        self.both(lambda c: c.compare_and_set(key, expected, value))

    @rule(key=KEYS, amount=SMALL_INTS)
    def incr(self, key: str, amount: int) -> None:
        self.both(lambda c: c.incr(key, amount))

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.both(lambda c: c.delete(key))

    @rule()
    def clear(self) -> None:
        self.both(lambda c: c.clear())

    @invariant()
    def same_contents(self) -> None:
        keys = ["a", "b", "c", ":", "*", "é", ""]
        self.both(lambda c: c.get_many(keys))

    def teardown(self) -> None:
        self.loop.run(self.redis.clear())
        self.loop.run(self.memory.close())
        self.loop.run(self.connection.close())
        self.loop.close()


def test_memory_and_redis_agree(redis_standalone: Any) -> None:
    CacheModel.url = redis_standalone.url()
    run_state_machine_as_test(
        CacheModel,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
