"""The Vercel AI SDK's UI message stream protocol (v1), written from a stream's events.

The AI SDK (npm ``ai``; ``useChat`` with ``DefaultChatTransport``) reads Server-Sent Events
whose ``data:`` is one JSON *part* each: ``start`` {messageId}, ``text-start`` {id},
``text-delta`` {id, delta}, ``text-end`` {id}, then ``finish`` {finishReason}, ``abort`` or
``error`` {errorText}, and a last ``data: [DONE]``; the response carries the header
``x-vercel-ai-ui-message-stream: v1``. A resumed stream is, by the AI SDK's default
(``resumeStreamIsReplay``), the whole message again from its start: the client starts the
message over when it sees ``start`` with the same ``messageId``, so the text arrives whole
and once. The message id is the stream id (the same on every instance).
"""

from __future__ import annotations

import json
from typing import Any

from chatscale.streams import Event

#: The response header that names the protocol.
HEADERS = [(b"x-vercel-ai-ui-message-stream", b"v1")]
#: The id of the message's one text part.
TEXT_ID = "text-0"
DONE = b"data: [DONE]\n\n"
#: chatscale's finish reasons (OpenAI's) as the AI SDK spells them.
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
}


def part(data: dict[str, Any]) -> bytes:
    """One part as an SSE ``data:`` frame."""
    return (
        b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )


def start(message_id: str) -> bytes:
    """The first part of a message."""
    return part({"type": "start", "messageId": message_id})


#: What ends a stream this instance cuts (a drain on SIGTERM, a storage failure): an error
#: the client shows, never a silently truncated answer (a body ending without ``finish`` reads
#: as a complete message to the AI SDK). The answer itself goes on: ``resumeStream()`` (or
#: the next mount with ``resume: true``) replays it from another instance.
INTERRUPTED = (
    part(
        {
            "type": "error",
            "errorText": "the stream was interrupted (the server is restarting); resume it",
        }
    )
    + DONE
)


class UiMessageWriter:
    """Turns one answer's events, from the first one, into UI message stream parts."""

    def __init__(self) -> None:
        self._text_open = False

    def write(self, event: Event) -> bytes:
        """The parts for ``event`` (empty for events the protocol has no part for:
        provider status and tool events)."""
        if event.type == "delta":
            text = event.data.get("text")
            if not isinstance(text, str) or not text:
                return b""
            opening = b"" if self._text_open else part({"type": "text-start", "id": TEXT_ID})
            self._text_open = True
            return opening + part({"type": "text-delta", "id": TEXT_ID, "delta": text})
        if not event.final:
            return b""
        closing = part({"type": "text-end", "id": TEXT_ID}) if self._text_open else b""
        self._text_open = False
        if event.type == "done":
            reason = _FINISH_REASONS.get(str(event.data.get("finish_reason")), "other")
            return closing + part({"type": "finish", "finishReason": reason}) + DONE
        if event.type == "aborted":
            return closing + part({"type": "abort"}) + DONE
        message = event.data.get("message")
        return (
            closing
            + part({"type": "error", "errorText": str(message or "the answer failed")})
            + DONE
        )

    def error(self, text: str) -> bytes:
        """An ``error`` part ending the stream (the answer cannot be read any further)."""
        closing = part({"type": "text-end", "id": TEXT_ID}) if self._text_open else b""
        self._text_open = False
        return closing + part({"type": "error", "errorText": text}) + DONE
