"""Bodies into records: JSON mode's validation and one level of array flattening."""

from __future__ import annotations

import json
from typing import Any

from chatscale.durable.errors import ProtocolError
from chatscale.durable.model import Record, is_json


def _no_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) does not.
    raise ValueError(f"{name} is not valid JSON")


def encode_record(content_type: str, body: bytes, *, allow_empty_array: bool) -> Record | None:
    """The record a PUT or POST body stores, or ``None`` when it stores nothing.

    For ``application/json`` the body must be JSON; a top-level array is one level of
    batching (each element a message; ``[]`` is refused on POST, nothing on PUT), any other
    value is one message. Messages are stored compact, joined by commas. An empty body
    stores nothing (a POST refuses it before, unless it only closes the stream).
    """
    if not body:
        return None
    if not is_json(content_type):
        return Record(body, 1)
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise ProtocolError(400, f"the body is not valid JSON: {reason}") from None
    messages = value if isinstance(value, list) else [value]
    if not messages:
        if allow_empty_array:
            return None
        raise ProtocolError(400, "an empty JSON array appends nothing; send at least one message")
    text = ",".join(json.dumps(m, separators=(",", ":"), ensure_ascii=False) for m in messages)
    return Record(text.encode("utf-8"), len(messages))


def json_array(records: list[Record]) -> bytes:
    """A JSON stream's read answer: every message of ``records`` in one array."""
    return b"[" + b",".join(r.data for r in records if r.data) + b"]"
