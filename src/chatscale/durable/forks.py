"""Where a fork starts: the source's records it inherits, shared by both stores."""

from __future__ import annotations

import json

from chatscale.durable.errors import ProtocolError
from chatscale.durable.model import Record
from chatscale.durable.offsets import Offset


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
