"""The JSON answers to refused requests, as raw ASGI messages (no framework needed)."""

from __future__ import annotations

from chatscale.asgi import Send, send_json

RATE_LIMITED = 429
BANNED = 403


def refusal_body(error: str, retry_after: int) -> dict[str, object]:
    """``{"error": ..., "retry_after": N}``: what every refusal carries."""
    return {"error": error, "retry_after": retry_after}


async def send_refusal(send: Send, status: int, error: str, retry_after: int) -> None:
    """Answer with ``status``, ``Retry-After`` and the JSON body."""
    await send_json(
        send,
        status,
        refusal_body(error, retry_after),
        [(b"retry-after", str(retry_after).encode()), (b"cache-control", b"no-store")],
    )
