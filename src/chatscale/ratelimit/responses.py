"""The JSON answers to refused requests, as raw ASGI messages (no framework needed)."""

from __future__ import annotations

import json

from chatscale.asgi import Send

RATE_LIMITED = 429
BANNED = 403


def refusal_body(error: str, retry_after: int) -> dict[str, object]:
    """``{"error": ..., "retry_after": N}``: what every refusal carries."""
    return {"error": error, "retry_after": retry_after}


async def send_refusal(send: Send, status: int, error: str, retry_after: int) -> None:
    """Answer with ``status``, ``Retry-After`` and the JSON body."""
    body = json.dumps(refusal_body(error, retry_after)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
