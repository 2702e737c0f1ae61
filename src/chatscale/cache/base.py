"""The one cache interface; backends only move encoded bytes.

Every public method validates its arguments and encodes values here, so the memory and Redis
backends refuse the same input with the same errors and store the same bytes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Final, TypeVar

from chatscale.cache.codec import (
    INT64_MAX,
    INT64_MIN,
    CacheInput,
    CacheValue,
    check_key,
    decode,
    encode,
)
from chatscale.cache.errors import CacheTTLError, CacheValueError
from chatscale.cache.namespaces import DEFAULT_TTL, CacheKeys

D = TypeVar("D")


class _UseDefault(Enum):
    TOKEN = "namespace default"


#: Pass as ``ttl`` to use the namespace's default time to live (the default).
NAMESPACE_TTL: Final = _UseDefault.TOKEN
TTL = float | None | _UseDefault


def ttl_ms(ttl: object, default_s: float | None) -> int | None:
    """``ttl`` (seconds, ``None`` = never, :data:`NAMESPACE_TTL`) as whole milliseconds.

    Raises :class:`CacheTTLError` for anything but a positive finite number, ``None`` or
    :data:`NAMESPACE_TTL`. Rounded up so a tiny positive TTL never becomes "no TTL".
    """
    if ttl is NAMESPACE_TTL:
        ttl = default_s
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise CacheTTLError(
            f"ttl must be a number of seconds or None, not {type(ttl).__name__} ({ttl!r})"
        )
    if not math.isfinite(ttl) or ttl <= 0:
        raise CacheTTLError(f"ttl must be a positive finite number of seconds, got {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


def check_amount(amount: object) -> int:
    """``amount`` if ``incr`` can add it; else :class:`CacheValueError`."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise CacheValueError(f"incr amount must be an int, not {type(amount).__name__}")
    if not INT64_MIN <= amount <= INT64_MAX:
        raise CacheValueError(f"incr amount {amount} is not a 64-bit integer")
    return amount


class Cache(ABC):
    """A namespaced key/value cache holding JSON values or bytes.

    ``ttl`` arguments are seconds (a positive finite number), ``None`` for no expiry, or
    :data:`NAMESPACE_TTL` (the default) for the namespace's entry in ``DEFAULT_TTL``.
    """

    backend: str = "?"

    def __init__(self, namespace: CacheKeys) -> None:
        self.namespace = namespace
        self.default_ttl = DEFAULT_TTL.get(namespace)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.namespace.value})"

    # --- public API ---------------------------------------------------------------------
    async def get(self, key: str, default: D | None = None) -> CacheValue | D:
        """The value stored under ``key``, or ``default`` when there is none."""
        key = check_key(key)
        data = await self._get(key)
        return default if data is None else decode(data, key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, CacheValue]:
        """The values of those ``keys`` that exist (missing keys are left out)."""
        checked = list(dict.fromkeys(check_key(k) for k in keys))
        if not checked:
            return {}
        found = await self._get_many(checked)
        return {k: decode(d, k) for k, d in zip(checked, found, strict=True) if d is not None}

    async def set(self, key: str, value: CacheInput, ttl: TTL = NAMESPACE_TTL) -> None:
        """Store ``value`` under ``key`` (replacing any value and its expiry)."""
        key = check_key(key)
        await self._set(key, encode(value), ttl_ms(ttl, self.default_ttl))

    async def set_many(self, items: Mapping[str, CacheInput], ttl: TTL = NAMESPACE_TTL) -> None:
        """Store every item of ``items`` with the same ``ttl`` (not atomic as a whole)."""
        ms = ttl_ms(ttl, self.default_ttl)
        encoded = [(check_key(k), encode(v)) for k, v in items.items()]
        if encoded:
            await self._set_many(encoded, ms)

    async def add(self, key: str, value: CacheInput, ttl: TTL = NAMESPACE_TTL) -> bool:
        """Store ``value`` only if ``key`` has no value; ``True`` if it was stored."""
        key = check_key(key)
        return await self._add(key, encode(value), ttl_ms(ttl, self.default_ttl))

    async def compare_and_set(
        self, key: str, expected: CacheValue, value: CacheInput, ttl: TTL = NAMESPACE_TTL
    ) -> bool:
        """Atomically replace the value of ``key`` if it currently equals ``expected``.

        Equality is of the encoded forms: same JSON type and value (``1`` is not ``1.0``
        nor ``True``; dicts compare regardless of key order). ``False`` when the key is
        missing or holds another value.
        """
        key = check_key(key)
        old, new = encode(expected), encode(value)
        return await self._compare_and_set(key, old, new, ttl_ms(ttl, self.default_ttl))

    async def incr(self, key: str, amount: int = 1, ttl: TTL = NAMESPACE_TTL) -> int:
        """Add ``amount`` to the integer under ``key`` (a missing key counts as 0).

        ``ttl`` applies only when the key is created; an existing key keeps its expiry.
        Raises :class:`CacheTypeError` when the value is not a 64-bit integer or the sum
        would overflow.
        """
        key = check_key(key)
        return await self._incr(key, check_amount(amount), ttl_ms(ttl, self.default_ttl))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it existed."""
        return await self._delete(check_key(key))

    async def clear(self) -> int:
        """Remove every entry of this namespace (and only this one); returns how many."""
        return await self._clear()

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release background tasks (the shared Redis connection is not closed)."""

    # --- backend primitives ---------------------------------------------------------------
    @abstractmethod
    async def _get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def _get_many(self, keys: list[str]) -> list[bytes | None]: ...

    @abstractmethod
    async def _set(self, key: str, data: bytes, ttl_ms: int | None) -> None: ...

    @abstractmethod
    async def _set_many(self, items: list[tuple[str, bytes]], ttl_ms: int | None) -> None: ...

    @abstractmethod
    async def _add(self, key: str, data: bytes, ttl_ms: int | None) -> bool: ...

    @abstractmethod
    async def _compare_and_set(
        self, key: str, expected: bytes, data: bytes, ttl_ms: int | None
    ) -> bool: ...

    @abstractmethod
    async def _incr(self, key: str, amount: int, ttl_ms: int | None) -> int: ...

    @abstractmethod
    async def _delete(self, key: str) -> bool: ...

    @abstractmethod
    async def _clear(self) -> int: ...
