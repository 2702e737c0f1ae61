"""Small helpers shared by the stream tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chatscale.streams import Event, StreamManager


async def collect(
    manager: StreamManager,
    job_id: str,
    after: str | None = None,
    *,
    limit: int | None = None,
    within: float = 10.0,
) -> list[Event]:
    """Subscribe and gather events until the final one (or ``limit`` events)."""
    out: list[Event] = []
    async with asyncio.timeout(within):
        stream = manager.subscribe(job_id, after=after)
        try:
            async for event in stream:
                out.append(event)
                if limit is not None and len(out) >= limit:
                    break
        finally:
            await aclose(stream)
    return out


async def aclose(stream: AsyncIterator[Event]) -> None:
    """Close a subscription iterator."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def text_of(events: list[Event]) -> str:
    """The text carried by the delta events."""
    return "".join(str(e.data["text"]) for e in events if e.type == "delta")


def check_ids(events: list[Event], start: int = 1) -> None:
    """Ids are consecutive from ``start`` and only the last event is final."""
    assert [e.id for e in events] == [str(i) for i in range(start, start + len(events))]
    assert all(not e.final for e in events[:-1])
