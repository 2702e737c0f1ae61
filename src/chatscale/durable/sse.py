"""Server-sent events of the protocol: ``data`` events then ``control`` events."""

from __future__ import annotations

import base64
import json
import re

from chatscale.durable.content import json_array
from chatscale.durable.model import Record, is_json, is_text

_LINES = re.compile(r"\r\n|\r|\n")
_PLAIN = re.compile(r"[0-9A-Za-z_.-]*")


def data_event(content_type: str, records: list[Record]) -> bytes:
    """One ``data`` event for a batch of records (``data:`` fields without the optional
    space, as the reference servers write them).

    Text is split on every line ending (CR, LF, CRLF) and each line sent as its own ``data:``
    field, so a payload cannot forge an event boundary; JSON streams send one array; other
    types are sent base64-encoded (``Stream-SSE-Data-Encoding: base64``).
    """
    if is_json(content_type):
        text = json_array(records).decode("utf-8")
    elif is_text(content_type):
        text = b"".join(r.data for r in records).decode("utf-8", errors="replace")
    else:
        text = base64.b64encode(b"".join(r.data for r in records)).decode("ascii")
    lines = _LINES.split(text)
    return ("event: data\n" + "".join(f"data:{line}\n" for line in lines) + "\n").encode()


def control_event(next_offset: str, cursor: str | None, *, up_to_date: bool, closed: bool) -> bytes:
    """The ``control`` event after each data event (and first, on an empty stream)."""
    # Written by hand (one per delivery): an offset and a cursor are digits and "_", which
    # JSON needs no escape for; json.dumps is kept for anything else.
    offset = next_offset if _PLAIN.fullmatch(next_offset) else json.dumps(next_offset)[1:-1]
    body = '{"streamNextOffset":"' + offset + '"'
    if closed:
        body += ',"streamClosed":true'  # no cursor: the client must not reconnect
    elif cursor is not None:
        shown = cursor if _PLAIN.fullmatch(cursor) else json.dumps(cursor)[1:-1]
        body += ',"streamCursor":"' + shown + '"'
    if up_to_date:
        body += ',"upToDate":true'
    return b"event: control\ndata:" + body.encode() + b"}\n\n"
