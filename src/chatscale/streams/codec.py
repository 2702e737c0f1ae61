"""How events travel through Redis: compact JSON, many events (of many jobs) per entry.

An item is the delta's text itself (a JSON string) or ``[type, data]`` for any other event;
a run of items starts at a known sequence number, so ids are never stored one by one.
Final events keep their ``text`` on the live path but not in the archive, where the text is
already present as deltas (a finished job then costs about its text once, not twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from chatscale.streams.model import FINAL_TYPES, Event

# orjson: decoding instance-log entries (hundreds of jobs' records each) is the largest
# single cost of a busy subscriber process; orjson does it several times faster.
_OPTIONS = orjson.OPT_NON_STR_KEYS
loads = orjson.loads


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return orjson.dumps(value, option=_OPTIONS)


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


def id_before(stream_id: str) -> str:
    """The largest stream id smaller than ``stream_id`` (for exclusive XREAD cursors)."""
    ms, _, seq = stream_id.partition("-")
    if int(seq or 0) > 0:
        return f"{ms}-{int(seq) - 1}"
    if int(ms) > 0:
        return f"{int(ms) - 1}-18446744073709551615"
    return "0-0"


def id_key(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
