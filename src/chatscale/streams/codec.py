"""How events travel through Redis: compact JSON, many events of one job per log entry.

An item is the delta's text itself (a JSON string) or ``[type, data]`` for any other event;
a run of items starts at a known sequence number, so ids are never stored one by one.
Final events are stored (and published) without their ``text``, which is already present as
deltas: a finished job costs about its text once, not twice. Subscribers put it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from chatscale.streams.model import FINAL_TYPES, Event

# orjson: decoding published batches is the largest single cost of a busy subscriber
# process; orjson does it several times faster than json.
_OPTIONS = orjson.OPT_NON_STR_KEYS
loads = orjson.loads


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, in a bytes object of its own size (it may be kept long)."""
    # orjson (3.12+) returns its output buffer as is: at least 4 KiB, rounded up to a power
    # of two, whatever the length. The writer keeps every batch of a running job, most of
    # them one window's worth (tens of bytes), so the copy saves about 4 KiB per batch.
    return b"".join((orjson.dumps(value, option=_OPTIONS), b""))


def pack(events: Sequence[Event], *, final_text: bool) -> list[Any]:
    """Items of ``events`` (consecutive ids)."""
    items: list[Any] = []
    for event in events:
        if event.type == "delta":
            items.append(event.data["text"])
        elif event.type in FINAL_TYPES and not final_text:
            items.append([event.type, {k: v for k, v in event.data.items() if k != "text"}])
        else:
            items.append([event.type, event.data])
    return items


def unpack(first: int, items: Sequence[Any]) -> list[Event]:
    """Events from items starting at sequence number ``first``."""
    out: list[Event] = []
    seq = first
    for item in items:
        if isinstance(item, str):
            out.append(Event(str(seq), "delta", {"text": item}))
        else:
            out.append(Event(str(seq), item[0], item[1]))
        seq += 1
    return out
