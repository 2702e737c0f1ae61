"""The protocol's write rules, as pure functions over a stream's state.

The in-memory store applies them directly; ``lua/append.lua`` and ``lua/create.lua`` apply
the same rules inside Redis (one script per request, so instances never race). Keep the two in
step: the conformance suite runs against both.
"""

from __future__ import annotations

from enum import Enum

from chatscale.durable.errors import ProtocolError
from chatscale.durable.model import AppendRequest, Producer, media_type


class ProducerVerdict(Enum):
    """What an idempotent producer's headers mean for this request."""

    ACCEPT = "accept"
    DUPLICATE = "duplicate"


def check_producer(state: tuple[int, int] | None, producer: Producer) -> ProducerVerdict:
    """Kafka-style validation: ``state`` is the producer's (epoch, last seq) or ``None``.

    A stale epoch is fenced (403), a new epoch must start at seq 0 (400), a seq already
    accepted is a duplicate (answered 204, nothing stored) and a gap is a 409.
    """
    if state is None:
        if producer.seq != 0:
            raise gap(0, producer.seq)
        return ProducerVerdict.ACCEPT
    epoch, last = state
    if producer.epoch < epoch:
        raise stale_epoch(producer.epoch, epoch)
    if producer.epoch > epoch:
        if producer.seq != 0:
            raise new_epoch_not_at_zero(producer.seq)
        return ProducerVerdict.ACCEPT
    if producer.seq <= last:
        return ProducerVerdict.DUPLICATE
    if producer.seq != last + 1:
        raise gap(last + 1, producer.seq)
    return ProducerVerdict.ACCEPT


# --- the refusals, one wording each (both stores raise them) ----------------------------


def stale_epoch(given: int, current: int) -> ProtocolError:
    """403: a zombie producer fenced by a newer epoch."""
    return ProtocolError(
        403,
        f"producer epoch {given} is stale; the current epoch is {current}",
        {"Producer-Epoch": str(current)},
    )


def new_epoch_not_at_zero(seq: int) -> ProtocolError:
    """400: a new epoch starts at seq 0."""
    return ProtocolError(400, f"a new producer epoch must start at seq 0, got {seq}")


def closed(tail: str) -> ProtocolError:
    """409: the stream is closed; its tail is in ``Stream-Next-Offset``."""
    return ProtocolError(
        409, "the stream is closed", {"Stream-Closed": "true", "Stream-Next-Offset": tail}
    )


def content_type_mismatch(given: str, stream_type: str) -> ProtocolError:
    """409: an append of another media type than the stream's."""
    return ProtocolError(409, f"Content-Type {given!r} does not match the stream's {stream_type!r}")


def seq_regression(seq: str, last: str) -> ProtocolError:
    """409: ``Stream-Seq`` did not grow."""
    return ProtocolError(409, f"Stream-Seq {seq!r} is not greater than the last one ({last!r})")


NOT_FOUND = "no such stream"
GONE = "the stream was deleted (forks still read its data)"
CONFLICTING_CONFIG = "the stream exists with a different configuration"
NO_SOURCE = "the stream to fork (Stream-Forked-From) does not exist"
DELETED_SOURCE = "the stream to fork (Stream-Forked-From) was deleted"
NOT_AN_OFFSET = "is not a position of this stream"


def gap(expected: int, received: int) -> ProtocolError:
    """409: a producer sequence gap."""
    return ProtocolError(
        409,
        f"producer sequence gap: expected {expected}, received {received}",
        {"Producer-Expected-Seq": str(expected), "Producer-Received-Seq": str(received)},
    )


def check_stream_seq(last: str | None, seq: str | None) -> None:
    """``Stream-Seq`` must grow strictly (byte-wise) per stream."""
    if seq is not None and last is not None and seq.encode() <= last.encode():
        raise ProtocolError(409, f"Stream-Seq {seq!r} is not greater than the last one ({last!r})")


def check_content_type(stream_type: str, request: AppendRequest) -> None:
    """An append's Content-Type must name the stream's media type (a close-only request,
    with no body, may carry any)."""
    given = request.content_type
    if request.record is None or given is None:
        return
    if media_type(given) != media_type(stream_type):
        raise content_type_mismatch(given, stream_type)
