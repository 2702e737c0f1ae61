"""The producer side of one job: buffers deltas, numbers events, hands batches to the manager.

``delta`` only appends to a list (it must sustain well over 100,000 chunks/s); the manager
turns every job's buffered deltas into one event per coalescing window and writes the
events of all jobs together. Events are numbered here, once, so an id never changes, even
when the events are written again after a Redis failover.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from chatscale.streams.errors import InvalidEvent
from chatscale.streams.model import Event, JobStatus, check_event, status_of

#: A producer checks the clock every this many buffered chunks (power of two, minus one).
_FAST_MASK = 31

if TYPE_CHECKING:
    from chatscale.streams.base import StreamManager


class Producer:
    """Writes one job's events. Obtained from :meth:`StreamManager.create` (or a takeover).

    After the job ended (completed, failed, aborted from any instance, log full, lease
    lost), further calls are ignored: ``closed`` is true and ``aborted`` is set, which is the
    signal for the generation task to cancel its provider call.
    """

    __slots__ = (
        "_bytes",
        "_dirty",
        "_manager",
        "_pending",
        "_text",
        "_unsent",
        "aborted",
        "closed",
        "created_at",
        "end_data",
        "end_reason",
        "epoch",
        "final_stored",
        "job_id",
        "meta",
        "owner",
        "seq",
        "status",
    )

    def __init__(
        self,
        manager: StreamManager,
        job_id: str,
        owner: str,
        meta: dict[str, Any],
        *,
        created_at: float | None = None,
        seq: int = 0,
        text: str = "",
        size: int = 0,
        epoch: int = 1,
    ) -> None:
        self._manager = manager
        self.job_id = job_id
        self.owner = owner
        self.meta = meta
        self.created_at = time.time() if created_at is None else created_at
        self.epoch = epoch
        #: Sequence number of the last event numbered so far.
        self.seq = seq
        self.status = JobStatus.RUNNING
        self.closed = False
        self.end_reason: str | None = None
        #: The final event's data (without the text), once the producer numbered it.
        self.end_data: dict[str, Any] = {}
        #: Whether this producer's final event is stored (on Redis: under its epoch). Only
        #: then is its answer the job's answer.
        self.final_stored = False
        self.aborted = asyncio.Event()
        self._text: list[str] = [text] if text else []
        self._bytes = size
        self._pending: list[str] = []
        self._unsent: list[Event] = []
        self._dirty = False

    def __repr__(self) -> str:
        return f"Producer({self.job_id!r}, seq={self.seq}, status={self.status.value})"

    @property
    def text(self) -> str:
        """The text numbered so far (buffered deltas not included until the next flush)."""
        if len(self._text) > 1:
            self._text = ["".join(self._text)]
        return self._text[0] if self._text else ""

    @property
    def last_event_id(self) -> str | None:
        """Id of the last numbered event."""
        return str(self.seq) if self.seq else None

    # --- producer API -------------------------------------------------------------------
    async def delta(self, text: str) -> None:
        """Append text to the answer (buffered and coalesced; cheap)."""
        if self.closed:
            return
        if not isinstance(text, str):
            raise InvalidEvent(f"delta text must be a str, not {type(text).__name__}")
        if not text:
            return
        pending = self._pending
        pending.append(text)
        manager = self._manager
        manager.metrics.chunks += 1
        backlog = manager.backlog
        backlog.chunk()
        if not self._dirty:
            self._dirty = True
            backlog.dirty(self)
        if backlog.pressing(check_age=not len(pending) & _FAST_MASK):
            # A producer that never waits (a fast one: many chunks in one window) holds
            # the event loop: nothing is written or read until it yields. It waits for the
            # writer once the process's oldest buffered chunk is older than pressure_s (or
            # too many chunks are buffered), which bounds latency without taxing paced
            # producers (an LLM's few chunks per window never get here).
            await backlog.relieve()

    async def event(self, type: str, data: dict[str, Any]) -> None:
        """Append a status / tool event (any JSON object) after the text so far."""
        size = len(check_event(type, data))
        if self.closed:
            return
        self._cut()
        self._append(type, data, size)
        if not self._dirty:
            self._dirty = True
            self._manager.backlog.dirty(self)

    async def complete(self, finish_reason: str = "stop") -> None:
        """End the job successfully; waits until the final event is stored."""
        if not isinstance(finish_reason, str):
            raise InvalidEvent("finish_reason must be a str")
        await self._finish("done", {"finish_reason": finish_reason})

    async def fail(self, message: str) -> None:
        """End the job with an ``error`` final event; waits until it is stored."""
        await self._finish("error", {"message": str(message)})

    # --- used by the managers -----------------------------------------------------------
    async def _finish(self, type_: str, extra: dict[str, Any], reason: str | None = None) -> None:
        if self.closed:
            return
        self.close_with(type_, extra, reason)
        await self._manager.store_end(self)

    def close_with(self, type_: str, extra: dict[str, Any], reason: str | None = None) -> None:
        """Number the buffered text and the final event; mark the producer closed."""
        if self.closed:
            return
        self._cut(force=True)
        self.end_data = dict(extra)
        data = {"text": self.text, **extra}
        self._append(type_, data, 0, final=True)
        self.closed = True
        self.end_reason = reason or type_
        self.status = status_of(type_)
        if type_ != "done":
            self.aborted.set()
        if not self._dirty:
            self._dirty = True
            self._manager.backlog.dirty(self)

    def _append(self, type_: str, data: dict[str, Any], size: int, *, final: bool = False) -> None:
        manager = self._manager
        if not final and (
            self.seq + 2 > manager.max_events or self._bytes + size > manager.max_bytes
        ):
            self._overflow()
            return
        self.seq += 1
        self._bytes += size
        self._unsent.append(Event(str(self.seq), type_, data))

    def _overflow(self) -> None:
        limit = self._manager
        self.close_with(
            "error",
            {
                "message": (
                    f"the response exceeded the log limit ({limit.max_events} events / "
                    f"{limit.max_bytes} bytes: STREAM_MAX_EVENTS / STREAM_MAX_BYTES)"
                ),
                "code": "log_full",
            },
            reason="log_full",
        )

    def _cut(self, *, force: bool = False) -> None:
        """Turn the buffered deltas into one delta event."""
        pending = self._pending
        if not pending:
            return
        text = pending[0] if len(pending) == 1 else "".join(pending)
        pending.clear()
        size = len(text.encode()) if not text.isascii() else len(text)
        manager = self._manager
        if not force and (
            self.seq + 2 > manager.max_events or self._bytes + size > manager.max_bytes
        ):
            self._overflow()
            return
        self.seq += 1
        self._bytes += size
        self._text.append(text)
        self._unsent.append(Event(str(self.seq), "delta", {"text": text}))

    def _take(self) -> list[Event]:
        """Number the buffered deltas and hand over every event not handed over yet."""
        self._dirty = False
        self._cut()
        events = self._unsent
        if events:
            self._unsent = []
            self._manager.metrics.events_appended += len(events)
        return events
