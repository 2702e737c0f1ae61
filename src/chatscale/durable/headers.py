"""Request headers of the protocol into typed requests; a bad header is a 400 naming it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol, overload

from chatscale.durable.content import encode_record
from chatscale.durable.errors import ProtocolError
from chatscale.durable.model import AppendRequest, CreateRequest, ForkSpec, Producer
from chatscale.durable.offsets import parse_offset

_TTL = re.compile(r"^(0|[1-9][0-9]{0,9})$")
_MAX_TTL_S = 10 * 366 * 86_400
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_UINT = re.compile(r"^(0|[1-9][0-9]{0,15})$")
_MAX_SAFE_INT = 2**53 - 1


class Headers(Protocol):
    """Case-insensitive header lookup: Starlette's ``Headers`` or :class:`RequestHeaders`."""

    @overload
    def get(self, key: str) -> str | None: ...

    @overload
    def get(self, key: str, default: str) -> str: ...


class RequestHeaders:
    """A request's headers by lower-case name, decoded once from the ASGI scope.

    Every append looks up about eight names; Starlette's ``Headers`` decodes and compares
    every header of the request on each lookup."""

    __slots__ = ("_values",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        values: dict[str, list[str]] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            found = values.get(key)
            if found is None:
                values[key] = [value.decode("latin-1")]
            else:
                found.append(value.decode("latin-1"))
        self._values = values

    def one(self, name: str) -> str | None:
        """The value of header ``name`` (as errors name it), ``None`` when absent; a 400 when
        it is given more than once."""
        values = self._values.get(name.lower())
        if values is None:
            return None
        if len(values) > 1:
            raise ProtocolError(400, f"{name} is given more than once")
        return values[0]

    def has(self, key: str) -> bool:
        """Whether header ``key`` (lower case) is given."""
        return key in self._values

    @overload
    def get(self, key: str) -> str | None: ...

    @overload
    def get(self, key: str, default: str) -> str: ...

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of header ``key``, else ``default``."""
        found = self._values.get(key.lower())
        return found[0] if found else default


def _flag(headers: RequestHeaders, name: str) -> bool:
    value = headers.one(name)
    if value is None:
        return False
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise ProtocolError(400, f"{name} is {value[:40]!r}; expected true or false")
    return text == "true"


def _uint(headers: RequestHeaders, name: str) -> int | None:
    value = headers.one(name)
    if value is None:
        return None
    if not _UINT.fullmatch(value) or int(value) > _MAX_SAFE_INT:
        raise ProtocolError(
            400, f"{name} is {value[:40]!r}; expected a whole number from 0 to 2^53-1"
        )
    return int(value)


def content_type(headers: RequestHeaders) -> str | None:
    """The request's Content-Type, ``None`` when absent or blank."""
    value = headers.one("Content-Type")
    return value.strip() if value and value.strip() else None


def _expiry(headers: RequestHeaders) -> tuple[int | None, str | None, int | None]:
    ttl_text = headers.one("Stream-TTL")
    expires_text = headers.one("Stream-Expires-At")
    if ttl_text is not None and expires_text is not None:
        raise ProtocolError(400, "Stream-TTL and Stream-Expires-At cannot be used together")
    ttl: int | None = None
    if ttl_text is not None:
        if not _TTL.fullmatch(ttl_text) or int(ttl_text) > _MAX_TTL_S:
            raise ProtocolError(
                400,
                f"Stream-TTL is {ttl_text[:40]!r}; expected whole seconds without sign, "
                f"leading zeros or decimals, at most {_MAX_TTL_S}",
            )
        ttl = int(ttl_text)
    if expires_text is None:
        return ttl, None, None
    try:
        if not _RFC3339.fullmatch(expires_text):
            raise ValueError
        moment = datetime.fromisoformat(expires_text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ProtocolError(
            400,
            f"Stream-Expires-At is {expires_text[:60]!r}; expected an RFC 3339 timestamp "
            "such as 2030-01-01T00:00:00Z",
        ) from None
    return None, expires_text, int(moment.timestamp() * 1000)


def create_request(headers: RequestHeaders, body: bytes, stream_of: StreamPath) -> CreateRequest:
    """A PUT's headers and body."""
    ttl, expires_at, expires_at_ms = _expiry(headers)
    fork_from = headers.one("Stream-Forked-From")
    fork_offset_text = headers.one("Stream-Fork-Offset")
    sub_offset = _uint(headers, "Stream-Fork-Sub-Offset")
    fork: ForkSpec | None = None
    if fork_from is None:
        if fork_offset_text is not None or sub_offset is not None:
            raise ProtocolError(
                400, "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From"
            )
    else:
        offset = None
        if fork_offset_text is not None and fork_offset_text != "-1":
            offset = parse_offset(fork_offset_text)
        elif fork_offset_text == "-1":
            offset = parse_offset("0" * 16 + "_" + "0" * 16)
        if sub_offset and fork_offset_text is None:
            raise ProtocolError(400, "Stream-Fork-Sub-Offset needs Stream-Fork-Offset")
        fork = ForkSpec(stream_of(fork_from), offset, sub_offset or 0)
    return CreateRequest(
        content_type=content_type(headers),
        ttl=ttl,
        expires_at=expires_at,
        expires_at_ms=expires_at_ms,
        closed=_flag(headers, "Stream-Closed"),
        body=body,
        fork=fork,
    )


def append_request(headers: RequestHeaders, body: bytes) -> AppendRequest:
    """A POST's headers and body."""
    close = _flag(headers, "Stream-Closed")
    kind = content_type(headers)
    if not body and not close:
        raise ProtocolError(400, "the body is empty; an append needs at least one byte")
    if body and kind is None:
        raise ProtocolError(400, "Content-Type is missing; an append must name its type")
    record = encode_record(kind, body, allow_empty_array=False) if body and kind else None
    seq = headers.one("Stream-Seq")
    if seq is not None and not seq:
        raise ProtocolError(400, "Stream-Seq is empty")
    return AppendRequest(kind, record, seq, _producer(headers), close)


#: The headers of an append besides its Content-Type and Authorization.
_NOT_PLAIN = frozenset(
    (b"stream-seq", b"stream-closed", b"producer-id", b"producer-epoch", b"producer-seq")
)


def plain_append(raw: Iterable[tuple[bytes, bytes]]) -> tuple[str, dict[str, str]] | None:
    """The Content-Type and the ``Authorization`` (as :class:`Headers`) of a plain append,
    from the request's raw headers in one pass; ``None`` when the append is not plain: it
    has another header of the protocol (a sequence number, a producer, a close), names its
    Content-Type or Authorization twice, or has no Content-Type (:func:`append_request`
    then reads it, and answers what is wrong)."""
    kind: bytes | None = None
    authorization: dict[str, str] = {}
    for name, value in raw:
        if name == b"content-type":
            if kind is not None:
                return None
            kind = value
        elif name == b"authorization":
            if authorization:
                return None
            authorization["authorization"] = value.decode("latin-1")
        elif name in _NOT_PLAIN:
            return None
    if kind is None:
        return None
    text = kind.decode("latin-1").strip()
    return (text, authorization) if text else None


def _producer(headers: RequestHeaders) -> Producer | None:
    if not (
        headers.has("producer-id") or headers.has("producer-epoch") or headers.has("producer-seq")
    ):
        return None  # a plain append: spared three lookups and their checks
    producer_id = headers.one("Producer-Id")
    epoch = _uint(headers, "Producer-Epoch")
    seq = _uint(headers, "Producer-Seq")
    given = [producer_id is not None, epoch is not None, seq is not None]
    if not any(given):
        return None
    if not all(given):
        raise ProtocolError(
            400, "Producer-Id, Producer-Epoch and Producer-Seq must be given together"
        )
    assert producer_id is not None and epoch is not None and seq is not None
    if not producer_id.strip():
        raise ProtocolError(400, "Producer-Id is empty")
    return Producer(producer_id, epoch, seq)


class StreamPath:
    """Stream names from URL paths under the protocol's base path."""

    MAX_LENGTH = 1024

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def __call__(self, path: str) -> str:
        """The stream name of ``path`` (``/v1/stream/a/b`` -> ``a/b``); 400 if not one."""
        prefix = self.base + "/"
        if not path.startswith(prefix):
            raise ProtocolError(400, f"{path[:100]!r} is not a stream path under {prefix}")
        return self.name(path[len(prefix) :])

    def name(self, name: str) -> str:
        """Check a stream name: 1 to 1024 printable characters, no ``.``/``..`` segment."""
        if not name or len(name) > self.MAX_LENGTH:
            raise ProtocolError(
                400, f"a stream name has 1 to {self.MAX_LENGTH} characters, got {len(name)}"
            )
        segments = f"/{name}/"
        if not name.isprintable() or "/./" in segments or "/../" in segments:
            raise ProtocolError(400, "the stream name has control characters or . / .. segments")
        return name
