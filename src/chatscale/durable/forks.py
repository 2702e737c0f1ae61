"""Forks and idempotent PUTs: what a new stream inherits and starts with, and when a PUT
on an existing stream is the same one. Shared by both stores."""

from __future__ import annotations

import json
from dataclasses import dataclass

from chatscale.durable.errors import ProtocolError
from chatscale.durable.model import (
    DEFAULT_CONTENT_TYPE,
    CreateRequest,
    ForkSpec,
    Record,
    media_type,
)
from chatscale.durable.offsets import Offset
from chatscale.durable.rules import CONFLICTING_CONFIG


def check_fork_point(ends: list[int], offset: Offset) -> None:
    """``offset`` must be a position of the source: ``ends`` are its byte ends per record."""
    tail_records = len(ends)
    if offset.record > tail_records:
        raise ProtocolError(400, f"Stream-Fork-Offset {offset} is beyond the source's tail")
    expected = ends[offset.record - 1] if offset.record else 0
    if offset.byte != expected:
        raise ProtocolError(400, f"Stream-Fork-Offset {offset} is not an offset of the source")


def cut_record(record: Record, sub_offset: int, json_mode: bool) -> Record:
    """The first ``sub_offset`` bytes (or JSON messages) of ``record``; 400 past its end."""
    if json_mode:
        messages = json.loads(b"[" + record.data + b"]")
        if sub_offset > len(messages):
            raise ProtocolError(
                400,
                f"Stream-Fork-Sub-Offset {sub_offset} is past the append's "
                f"{len(messages)} messages",
            )
        kept = messages[:sub_offset]
        data = ",".join(json.dumps(m, separators=(",", ":"), ensure_ascii=False) for m in kept)
        return Record(data.encode(), len(kept))
    if sub_offset > len(record.data):
        raise ProtocolError(
            400,
            f"Stream-Fork-Sub-Offset {sub_offset} is past the append's {len(record.data)} bytes",
        )
    return Record(record.data[:sub_offset], 1)


#: What a fork's PUT asked for, as stored and compared on an idempotent PUT:
#: (source, offset or "", sub-offset); ``None`` for a stream that is not a fork.
ForkKey = tuple[str, str, str]


def fork_key(fork: ForkSpec | None) -> ForkKey | None:
    """The comparable form of a PUT's fork headers."""
    if fork is None:
        return None
    offset = str(fork.offset) if fork.offset is not None else ""
    return (fork.source, offset, str(fork.sub_offset))


@dataclass(frozen=True)
class Inherited:
    """A new stream's content type and expiry once a fork took its source's defaults."""

    content_type: str
    ttl: int | None
    expires_at: str | None
    expires_at_ms: int | None


def settle(request: CreateRequest, source: Inherited | None) -> Inherited:
    """Apply the defaults: octet-stream, or for a fork the source's content type (a
    different one is a 409) and, without TTL or Expires-At of its own, its expiry."""
    own = Inherited(
        request.content_type or DEFAULT_CONTENT_TYPE,
        request.ttl,
        request.expires_at,
        request.expires_at_ms,
    )
    if source is None:
        return own
    content_type = own.content_type
    if request.content_type is None:
        content_type = source.content_type
    elif media_type(content_type) != media_type(source.content_type):
        raise ProtocolError(
            409,
            f"Content-Type {content_type!r} differs from the forked stream's "
            f"{source.content_type!r}",
        )
    if request.ttl is None and request.expires_at is None:
        return Inherited(content_type, source.ttl, source.expires_at, source.expires_at_ms)
    return Inherited(content_type, own.ttl, own.expires_at, own.expires_at_ms)


def check_same(existing: Inherited, existing_fork: ForkKey | None, request: CreateRequest) -> None:
    """A PUT on an existing stream is a 200 only with the same configuration, else 409.
    (A fork's PUT without Content-Type or expiry inherited them: its fork headers decide.)"""
    fork = request.fork
    wanted = request.content_type
    same = fork_key(fork) == existing_fork
    if wanted is not None or fork is None:
        same = same and media_type(wanted or DEFAULT_CONTENT_TYPE) == media_type(
            existing.content_type
        )
    if fork is None:
        same = same and (request.ttl, request.expires_at_ms) == (
            existing.ttl,
            existing.expires_at_ms,
        )
    if not same:
        raise ProtocolError(409, CONFLICTING_CONFIG)


def fork_records(
    inherited: list[Record], cut_from: Record | None, sub_offset: int, json_mode: bool
) -> list[Record]:
    """The records a fork starts with: the source's before the fork point, plus the first
    ``sub_offset`` bytes (or messages) of the next one."""
    if not sub_offset:
        return inherited
    if cut_from is None:
        raise ProtocolError(400, "Stream-Fork-Sub-Offset needs an append at Stream-Fork-Offset")
    return [*inherited, cut_record(cut_from, sub_offset, json_mode)]
