"""The protocol's requests and answers, independent of HTTP and of the storage."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatscale.durable.offsets import Offset

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def media_type(content_type: str) -> str:
    """``Text/Plain; charset=utf-8`` -> ``text/plain``: what stream content types compare by."""
    found = _MEDIA_TYPES.get(content_type)
    if found is None:
        found = content_type.split(";", 1)[0].strip().lower()
        # An append asks up to three times, and a server sees a few content types.
        if len(_MEDIA_TYPES) < _MEDIA_TYPES_KEPT:
            _MEDIA_TYPES[content_type] = found
    return found


_MEDIA_TYPES: dict[str, str] = {}
_MEDIA_TYPES_KEPT = 256


def is_json(content_type: str) -> bool:
    """JSON mode (message boundaries, array flattening) applies to ``application/json``."""
    return media_type(content_type) == "application/json"


def is_text(content_type: str) -> bool:
    """SSE sends text and JSON streams as text, everything else base64-encoded."""
    return media_type(content_type).startswith("text/") or is_json(content_type)


@dataclass(frozen=True)
class Producer:
    """An idempotent producer's headers: ``Producer-Id``, ``-Epoch`` and ``-Seq``."""

    id: str
    epoch: int
    seq: int


@dataclass(frozen=True)
class ForkSpec:
    """``Stream-Forked-From`` (a stream path), ``Stream-Fork-Offset`` (``None``: the source's
    tail) and ``Stream-Fork-Sub-Offset`` (bytes, or JSON messages, of the next append)."""

    source: str
    offset: Offset | None
    sub_offset: int


# The values every append and read makes (a record, the request, the stream's info, the
# result) are slotted dataclasses, not frozen ones: a frozen dataclass sets each field through
# ``object.__setattr__``, and building them was a measurable share of an append's CPU
# (docs/benchmarks.md, Durable Streams). They are never changed after they are built.
@dataclass(slots=True)
class Record:
    """One append as stored: its bytes (for JSON streams the messages, compact, joined by
    commas, without the enclosing brackets) and how many messages it holds."""

    data: bytes
    messages: int


@dataclass(frozen=True)
class CreateRequest:
    """A PUT. ``content_type`` ``None`` means "not given" (default, or a fork's source's)."""

    content_type: str | None
    ttl: int | None
    expires_at: str | None
    expires_at_ms: int | None
    closed: bool
    body: bytes
    fork: ForkSpec | None


@dataclass(slots=True)
class AppendRequest:
    """A POST: a record to append (``None`` for a close-only request), ``Stream-Seq``, an
    idempotent producer, and whether it closes the stream."""

    content_type: str | None
    record: Record | None
    seq: str | None
    producer: Producer | None
    close: bool


@dataclass(slots=True)
class StreamInfo:
    """What HEAD tells, and what every answer about a stream carries."""

    id: str
    content_type: str
    ttl: int | None
    expires_at: str | None
    closed: bool
    tail: Offset


@dataclass(slots=True)
class WriteResult:
    """The outcome of a PUT or POST that was not refused."""

    info: StreamInfo
    status: int
    producer: tuple[int, int] | None = None  # (epoch, highest accepted seq) to echo


@dataclass(slots=True)
class ReadResult:
    """Records from ``start`` to ``end`` (``end`` is the tail when ``up_to_date``)."""

    info: StreamInfo
    start: Offset
    end: Offset
    records: list[Record] = field(default_factory=list)
    #: The store's count of changes it had heard of on this stream when the read began
    #: (``None``: it was not listening); passed back to ``wait`` it spares a re-check.
    seen: int | None = None

    @property
    def up_to_date(self) -> bool:
        """Whether this answer reaches the tail."""
        return self.end == self.info.tail
