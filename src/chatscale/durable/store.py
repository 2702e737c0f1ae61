"""What a Durable Streams storage backend does (in memory or on Redis)."""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from chatscale.durable.model import (
    AppendRequest,
    CreateRequest,
    ReadResult,
    StreamInfo,
    WriteResult,
)
from chatscale.durable.offsets import Offset


class DurableStore(Protocol):
    """Every method raises :class:`~chatscale.durable.errors.ProtocolError` for a refusal
    (404 unknown stream, 410 a deleted stream forks still read, 409 conflicts...)."""

    async def create(self, path: str, request: CreateRequest) -> WriteResult:
        """PUT: create the stream (201), or confirm an identical one (200)."""
        ...

    async def append(self, path: str, request: AppendRequest) -> WriteResult:
        """POST: append and/or close, atomically with the sequence and producer checks."""
        ...

    async def delete(self, path: str) -> None:
        """DELETE the stream (kept, unreadable, while forks still read its data)."""
        ...

    async def head(self, path: str) -> StreamInfo:
        """The stream's metadata; does not extend a sliding TTL."""
        ...

    async def read(self, path: str, start: Offset | None, max_bytes: int) -> ReadResult:
        """Records from ``start`` (``None``: the tail) up to about ``max_bytes`` (at least one
        record when there is one); extends a sliding TTL."""
        ...

    async def wait(
        self, path: str, after: Offset, timeout_s: float, seen: int | None = None
    ) -> None:
        """Return once the tail is past ``after``, the stream is closed or gone, or after
        ``timeout_s``; callers read again afterwards. ``seen`` is the ``seen`` of the read
        that ended at ``after``, if the caller has it."""
        ...

    async def close(self) -> None:
        """Release connections and tasks."""
        ...


@runtime_checkable
class AppendsAtOnce(Protocol):
    """A store that appends without waiting for anything (in memory): the server then
    answers appends from its HTTP protocol's callback (docs/durable-streams.md)."""

    def append_now(self, path: str, request: AppendRequest) -> WriteResult:
        """:meth:`DurableStore.append` done at once; a refusal changes nothing."""
        ...

    def append_plain(self, path: str, content_type: str, body: bytes) -> Offset | None:
        """A plain append (a body; no sequence number, producer or close) at once: the new
        tail, or ``None``, having changed nothing, when it is not that simple here (a JSON
        stream, another content type, a closed or expired stream...): :meth:`append_now`
        then takes it, by every rule."""
        ...


async def woken_or_timed_out(waiter: asyncio.Future[None], timeout_s: float) -> None:
    """Wait until ``waiter`` is done, at most ``timeout_s``, by one timer that completes it.

    A store's ``wait`` runs once per live reader and append (a thousand SSE readers of one
    stream wait a thousand times per append); ``asyncio.timeout`` costs a context object,
    a cancellation and its undoing on every timeout, this one timer handle."""
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
