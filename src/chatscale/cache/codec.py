"""How cache values become bytes and back, identically on every backend.

* JSON values (``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``dict`` with
  ``str`` keys) are stored as compact UTF-8 JSON with sorted keys, so equal values always
  encode to equal bytes (compare-and-set compares encodings) and integers are stored as
  plain decimal text (Redis ``INCRBY`` works on them directly).
* ``bytes`` are stored as one ``0x00`` byte followed by the raw bytes. JSON text can never
  start with ``0x00``, so the two can never be confused and both round-trip exactly.

Anything else (tuples, sets, ``dict`` keys that are not ``str``, NaN or infinities, bytes
nested inside JSON, arbitrary objects) is refused with :class:`CacheValueError`: accepting
it would hand back a different value than was stored. Nothing is ever pickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from chatscale.cache.errors import (
    CacheCorruptError,
    CacheKeyError,
    CacheTypeError,
    CacheValueError,
)

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
CacheValue: TypeAlias = "JSONValue | bytes"
#: What may be stored: like :data:`JSONValue` but read-only containers, so that a
#: ``dict[str, list[int]]`` type-checks (lists and dicts are invariant); tuples and
#: other non-list sequences are still refused at run time.
JSONInput: TypeAlias = (
    "bool | int | float | str | Sequence[JSONInput] | Mapping[str, JSONInput] | None"
)
CacheInput: TypeAlias = "JSONInput | bytes"

BYTES_MARKER = b"\x00"
#: Largest and smallest integers ``incr`` accepts (Redis integers are signed 64-bit).
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
_MAX_DEPTH = 200

_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True
)
_decode = json.loads
_SCALARS = (str, int, float, bool, type(None))


def _check(value: object, depth: int) -> None:
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            raise CacheValueError(f"cannot store {value!r}: NaN and infinities are not JSON")
        return
    if depth > _MAX_DEPTH:
        raise CacheValueError(f"cannot store a value nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, list):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CacheValueError(
                    f"cannot store a dict with a {type(key).__name__} key {key!r}: "
                    "JSON object keys are strings"
                )
            _check(item, depth + 1)
        return
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise CacheValueError("bytes can only be stored as the whole value, not inside JSON")
    raise CacheValueError(
        f"cannot store a value of type {type(value).__name__}: "
        "expected bytes or JSON (None, bool, int, float, str, list, dict with str keys)"
    )


def encode(value: object) -> bytes:
    """The stored form of ``value``; raises :class:`CacheValueError` if it is not storable."""
    if type(value) is bytes:
        return BYTES_MARKER + value
    if type(value) is not str:
        _check(value, 0)
    try:
        return _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CacheValueError(f"cannot store a string that is not valid Unicode: {exc}") from None


def decode(data: bytes, key: str = "?") -> CacheValue:
    """The value ``data`` encodes; raises :class:`CacheCorruptError` for foreign data."""
    if data.startswith(BYTES_MARKER):
        return data[1:]
    try:
        value: JSONValue = _decode(data)
    except ValueError:
        shown = data[:40]
        raise CacheCorruptError(
            f"the stored value of {key!r} is not chatscale's encoding ({shown!r}...)"
        ) from None
    return value


def check_key(key: object) -> str:
    """``key`` if it can be a cache key; else :class:`CacheKeyError`."""
    if type(key) is str and key.isascii():
        return key
    if type(key) is not str:
        if not isinstance(key, str):
            raise CacheKeyError(f"cache keys must be str, not {type(key).__name__} ({key!r})")
        key = str.__str__(key)
    try:
        key.encode()
    except UnicodeEncodeError:
        raise CacheKeyError(f"cache key {key!r} is not valid Unicode") from None
    return key


def as_int(value: CacheValue, key: str) -> int:
    """``value`` if it is an integer ``incr`` can add to; else :class:`CacheTypeError`."""
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise CacheTypeError(f"cannot incr {key!r}: its value is not a 64-bit integer")
    return value
