"""What producers have buffered and not handed to the writer yet, and the backpressure that
keeps it small.

A manager owns one :class:`Backlog`; its producers report buffered chunks and dirty
state to it, and its writer takes the dirty producers from it once per coalescing window.
Neither side touches the other's attributes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatscale.streams.producer import Producer

#: The longest a full-speed producer buffers before it waits for a flush (seconds).
PRESSURE_S = 0.001
#: Chunks buffered by all producers together at which a producer waits for a flush.
PRESSURE_CHUNKS = 1024
#: The same after the writer sat idle: the first windows of a start grow from this, doubling
#: at each flush up to :data:`PRESSURE_CHUNKS`.
FIRST_CHUNKS = 128
#: Without a flush for this long (seconds), the writer counts as idle.
IDLE_S = 1.0


class Backlog:
    """The producers with unwritten events since the last flush, and their chunk count."""

    __slots__ = ("_clock", "_dirty", "_relieve", "_schedule", "_taken", "buffered",
                 "max_chunks", "pressure_chunks", "pressure_s", "since")  # fmt: skip

    def __init__(
        self,
        schedule: Callable[[], None],
        relieve: Callable[[], Awaitable[None]],
        *,
        coalesce_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._schedule = schedule
        self._relieve = relieve
        self._clock = clock
        self._dirty: list[Producer] = []
        #: Chunks buffered by all producers since the last flush, and when the first of
        #: them was (``clock``).
        self.buffered = 0
        self.since = 0.0
        #: Chunks at which a producer waits now: like a TCP window after idle, small at
        #: first. The first writes of a start are the slow ones (new keys, cold caches); a
        #: full window of chunks waiting behind them was the tail of a burst of fast
        #: producers (docs/benchmarks.md, workload a).
        self.pressure_chunks = FIRST_CHUNKS
        #: What :attr:`pressure_chunks` grows to (raise it for throughput, lower it for
        #: latency).
        self.max_chunks = PRESSURE_CHUNKS
        #: When the writer last took the buffered producers.
        self._taken = -IDLE_S
        #: A fast producer waits for the writer once buffered chunks are this old (s).
        self.pressure_s = min(coalesce_s, PRESSURE_S) if coalesce_s else PRESSURE_S

    def dirty(self, producer: Producer) -> None:
        """``producer`` has unwritten events: the writer takes it within the window."""
        if not self._dirty:
            self.since = now = self._clock()
            if now - self._taken > IDLE_S:
                self.pressure_chunks = min(FIRST_CHUNKS, self.max_chunks)
        self._dirty.append(producer)
        self._schedule()

    def chunk(self) -> None:
        """One more chunk buffered."""
        self.buffered += 1

    def pressing(self, check_age: bool) -> bool:
        """Whether a producer should wait for the writer now (too many chunks buffered, or,
        when ``check_age``, the oldest one older than ``pressure_s``)."""
        return self.buffered >= self.pressure_chunks or (
            check_age and self._clock() - self.since > self.pressure_s
        )

    async def relieve(self) -> None:
        """Wait until the writer has taken what is buffered."""
        await self._relieve()

    def take(self) -> list[Producer]:
        """The dirty producers since the last call (the count starts again)."""
        dirty, self._dirty = self._dirty, []
        self.buffered = 0
        self.pressure_chunks = min(self.max_chunks, self.pressure_chunks * 2)
        self._taken = self._clock()
        return dirty
