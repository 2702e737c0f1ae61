"""Every cache behaviour, once per backend: memory, standalone, Cluster, Sentinel."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from chatscale.cache import (
    CacheKeyError,
    CacheKeys,
    CacheTTLError,
    CacheTypeError,
    CacheValueError,
)
from tests.cache.conftest import MakeCache

NS = CacheKeys.ROLES
OTHER = CacheKeys.TOOLS

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -7,
    2**70,
    1.5,
    -0.0,
    1e300,
    "",
    "plain",
    "héllo \u2603 \U0001f600",
    "\x00starts with NUL",
    [],
    [1, "a", None, [2.5, {"x": []}]],
    {},
    {"b": 1, "a": [{"nested": {"deep": "yes"}}], "": None},
    b"",
    b"\x00",
    b"\x00\xff\xfe",
    b'"json-looking"',
    b"{}",
    bytes(range(256)),
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
async def test_values_round_trip_exactly(make_cache: MakeCache, value: Any) -> None:
    cache = make_cache(NS)
    await cache.set("k", value)
    got: Any = await cache.get("k", default="missing")
    assert got == value
    assert type(got) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, got) == math.copysign(1, value)


async def test_bytes_and_json_with_same_text_stay_distinct(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    await cache.set_many({"j": "x", "b": b'"x"', "n": 5, "nb": b"5"})
    assert await cache.get_many(["j", "b", "n", "nb"]) == {
        "j": "x",
        "b": b'"x"',
        "n": 5,
        "nb": b"5",
    }


async def test_missing_key_returns_default_and_none_is_a_value(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    assert await cache.get("absent") is None
    assert await cache.get("absent", "fallback") == "fallback"
    await cache.set("none", None)
    assert await cache.get("none", "fallback") is None
    assert await cache.get_many(["none", "absent"]) == {"none": None}


async def test_keys_with_special_characters(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    keys = ["", "a:b", "*", "[x]", "{tag}", "sp ace", "ü\u2603", "a\\b", "?"]
    await cache.set_many({k: i for i, k in enumerate(keys)})
    assert await cache.get_many(keys) == {k: i for i, k in enumerate(keys)}
    assert await cache.clear() == len(keys)
    assert await cache.get_many(keys) == {}


async def test_returned_values_are_copies(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    value = {"list": [1, 2]}
    await cache.set("k", value)
    value["list"].append(3)
    got: Any = await cache.get("k")
    assert got == {"list": [1, 2]}
    got["list"].append(4)
    assert await cache.get("k") == {"list": [1, 2]}


async def test_set_overwrites_and_delete(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    await cache.set("k", 1)
    await cache.set("k", "two")
    assert await cache.get("k") == "two"
    assert await cache.delete("k") is True
    assert await cache.delete("k") is False
    assert await cache.get("k") is None


async def test_ttl_expires_and_none_keeps(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    await cache.set("short", 1, ttl=0.05)
    await cache.set("forever", 2, ttl=None)
    await cache.set_many({"m1": 1, "m2": 2}, ttl=0.05)
    await cache.set("reset", 3, ttl=0.05)
    await cache.set("reset", 3, ttl=None)
    assert await cache.get("short") == 1
    await asyncio.sleep(0.15)
    assert await cache.get("short") is None
    assert await cache.get_many(["m1", "m2", "forever", "reset"]) == {"forever": 2, "reset": 3}


async def test_get_many_set_many(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    assert await cache.get_many([]) == {}
    await cache.set_many({})
    await cache.set_many({f"k{i}": i for i in range(50)})
    got = await cache.get_many([f"k{i}" for i in range(60)] + ["k1", "k1"])
    assert got == {f"k{i}": i for i in range(50)}


async def test_add_only_when_absent(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    assert await cache.add("k", "first") is True
    assert await cache.add("k", "second") is False
    assert await cache.get("k") == "first"
    assert await cache.add("short", 1, ttl=0.05) is True
    await asyncio.sleep(0.1)
    assert await cache.add("short", 2) is True
    assert await cache.get("short") == 2


async def test_compare_and_set(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    assert await cache.compare_and_set("k", None, 1) is False  # missing is not None
    assert await cache.get("k") is None
    await cache.set("k", {"a": 1, "b": 2})
    assert await cache.compare_and_set("k", {"a": 1}, "no") is False
    assert await cache.compare_and_set("k", {"b": 2, "a": 1}, 1) is True  # order-free
    assert await cache.get("k") == 1
    assert await cache.compare_and_set("k", 1.0, "float") is False  # 1 is not 1.0
    assert await cache.compare_and_set("k", True, "bool") is False  # nor True
    assert await cache.compare_and_set("k", 1, b"bytes") is True
    assert await cache.compare_and_set("k", b"bytes", None, ttl=0.05) is True
    assert await cache.get("k", "missing") is None
    await asyncio.sleep(0.1)
    assert await cache.get("k", "missing") == "missing"


async def test_incr(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    assert await cache.incr("n") == 1
    assert await cache.incr("n", 41) == 42
    assert await cache.incr("n", -50) == -8
    assert await cache.get("n") == -8
    await cache.set("big", 2**63 - 2)
    assert await cache.incr("big") == 2**63 - 1
    with pytest.raises(CacheTypeError, match="overflow"):
        await cache.incr("big")
    assert await cache.get("big") == 2**63 - 1
    bad_values: list[Any] = ["5", 5.0, True, None, [1], b"5", 2**64]
    for bad in bad_values:
        await cache.set("bad", bad)
        with pytest.raises(CacheTypeError, match="not a 64-bit integer"):
            await cache.incr("bad")
        assert await cache.get("bad") == bad


async def test_incr_ttl_applies_on_create_only(make_cache: MakeCache) -> None:
    cache = make_cache(NS)
    assert await cache.incr("t", ttl=0.1) == 1
    assert await cache.incr("t", ttl=None) == 2  # keeps the expiry it was created with
    await asyncio.sleep(0.2)
    assert await cache.get("t") is None
    await cache.set("kept", 1, ttl=None)
    assert await cache.incr("kept", ttl=0.05) == 2
    await asyncio.sleep(0.1)
    assert await cache.get("kept") == 2


async def test_clear_removes_exactly_its_namespace(make_cache: MakeCache) -> None:
    cache, other = make_cache(NS), make_cache(OTHER)
    await cache.set_many({f"k{i}": i for i in range(25)})
    await other.set_many({f"k{i}": i for i in range(10)})
    assert await cache.clear() == 25
    assert await cache.get_many([f"k{i}" for i in range(25)]) == {}
    assert len(await other.get_many([f"k{i}" for i in range(10)])) == 10
    assert await cache.clear() == 0


BAD_VALUES: list[Any] = [
    (1, 2),
    {1, 2},
    {1: "int key"},
    {"nested": {(1,): 2}},
    float("nan"),
    [float("inf")],
    {"b": b"nested bytes"},
    bytearray(b"x"),
    object(),
    "\ud800 lone surrogate",
]


@pytest.mark.parametrize("value", BAD_VALUES, ids=[type(v).__name__ for v in BAD_VALUES])
async def test_unstorable_values_are_refused(make_cache: MakeCache, value: Any) -> None:
    cache = make_cache(NS)
    for call in (
        lambda: cache.set("k", value),
        lambda: cache.set_many({"ok": 1, "k": value}),
        lambda: cache.add("k", value),
        lambda: cache.compare_and_set("k", value, 1),
        lambda: cache.compare_and_set("k", 1, value),
    ):
        with pytest.raises(CacheValueError):
            await call()
    assert await cache.get_many(["k", "ok"]) == {}


@pytest.mark.parametrize("key", [1, b"k", None, ("a",), "\udc00"], ids=repr)
async def test_bad_keys_are_refused(make_cache: MakeCache, key: Any) -> None:
    cache = make_cache(NS)
    for call in (
        lambda: cache.get(key),
        lambda: cache.set(key, 1),
        lambda: cache.get_many(["ok", key]),
        lambda: cache.set_many({key: 1}),
        lambda: cache.delete(key),
        lambda: cache.incr(key),
        lambda: cache.add(key, 1),
    ):
        with pytest.raises(CacheKeyError):
            await call()


@pytest.mark.parametrize("ttl", [-1, 0, -0.5, float("nan"), float("inf"), "10", True])
async def test_bad_ttls_are_refused(make_cache: MakeCache, ttl: Any) -> None:
    cache = make_cache(NS)
    for call in (
        lambda: cache.set("k", 1, ttl=ttl),
        lambda: cache.set_many({"k": 1}, ttl=ttl),
        lambda: cache.add("k", 1, ttl=ttl),
        lambda: cache.incr("k", ttl=ttl),
        lambda: cache.compare_and_set("k", 1, 2, ttl=ttl),
    ):
        with pytest.raises(CacheTTLError):
            await call()
    assert await cache.get("k") is None


@pytest.mark.parametrize("amount", [1.5, "1", True, 2**63, None])
async def test_bad_incr_amounts_are_refused(make_cache: MakeCache, amount: Any) -> None:
    with pytest.raises(CacheValueError):
        await make_cache(NS).incr("k", amount)
