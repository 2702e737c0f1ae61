"""Offsets and cursors.

An offset is ``RRRRRRRRRRRRRRRR_BBBBBBBBBBBBBBBB``: the number of appends (records) before
the position and the number of stored bytes before it, both as 16 zero-padded decimal digits.
Both parts only grow, so offsets sort lexicographically in stream order, never equal ``-1`` or
``now``, and hold only URL-safe characters. The record part alone locates the position; the
byte part is checked against it so a forged offset is refused rather than misread.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import NamedTuple

from chatscale.durable.errors import ProtocolError

_DIGITS = 16
_LIMIT = 10**_DIGITS
_OFFSET = re.compile(r"^([0-9]{16})_([0-9]{16})$")
#: A cursor this server can have written: an interval number, at most 18 digits.
_CURSOR = re.compile(r"[0-9]{1,18}")
#: Cursor intervals: 20 s counted from 2024-10-09T00:00:00Z (the protocol's defaults).
CURSOR_EPOCH_S = 1_728_432_000
CURSOR_INTERVAL_S = 20


class Offset(NamedTuple):
    """A position: ``record`` appends and ``byte`` bytes before it. Ordered, hashable and
    immutable; a tuple because every append and read makes a few, and a frozen dataclass
    costs twice as much to build."""

    record: int
    byte: int

    def __str__(self) -> str:
        return _FORMAT % self

    def raw(self) -> bytes:
        """The offset as a header carries it."""
        return _RAW_FORMAT % self


_FORMAT = f"%0{_DIGITS}d_%0{_DIGITS}d"
_RAW_FORMAT = _FORMAT.encode()


START = Offset(0, 0)


@dataclass(frozen=True)
class OffsetQuery:
    """A requested read position: an offset, the stream start (``-1``) or its tail (``now``)."""

    offset: Offset | None
    now: bool = False


def parse_offset(text: str) -> Offset:
    """Parse a stored offset; a malformed one is a 400 naming the accepted form."""
    match = _OFFSET.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 80 else text[:80] + "..."
        raise ProtocolError(
            400,
            f"offset {shown!r} is malformed; expected -1, now, or an offset this server returned "
            "(16 digits, '_', 16 digits)",
        )
    return Offset(int(match.group(1)), int(match.group(2)))


def parse_offset_query(values: list[str]) -> OffsetQuery:
    """The ``offset`` query parameter (absent means the stream start)."""
    if not values:
        return OffsetQuery(None)
    if len(values) > 1:
        raise ProtocolError(400, "offset is given more than once; expected one offset parameter")
    text = values[0]
    if text == "-1":
        return OffsetQuery(None)
    if text == "now":
        return OffsetQuery(None, now=True)
    if text == "":
        raise ProtocolError(400, "offset is empty; expected -1, now, or an offset")
    return OffsetQuery(parse_offset(text))


def next_cursor(client_cursor: str | None, now_s: float | None = None) -> str:
    """The ``Stream-Cursor`` of a live answer: the current 20 s interval number, or, when the
    client already holds that interval or a later one, a larger one (1 s to 1 h of jitter) so
    a CDN can never serve the same cached answer in a loop."""
    current = int(((time.time() if now_s is None else now_s) - CURSOR_EPOCH_S) // CURSOR_INTERVAL_S)
    held: int | None = None
    # ASCII digits only: str.isdigit() is true of "³" and other digits int() refuses (an
    # SSE answer broke after its head on such a cursor; found by schemathesis).
    if client_cursor is not None and _CURSOR.fullmatch(client_cursor):
        held = int(client_cursor)
    if held is not None and held >= current:
        jitter_s = random.randint(1, 3600)
        return str(held + max(1, jitter_s // CURSOR_INTERVAL_S))
    return str(current)


def check_offset_bounds(offset: Offset) -> None:
    """Offsets stay below 10**16 in both parts (the format's width)."""
    if offset.record >= _LIMIT or offset.byte >= _LIMIT:
        raise ProtocolError(400, "the stream is full (offset space exhausted)")
