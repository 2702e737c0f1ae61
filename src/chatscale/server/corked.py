"""Whole answers written at the end of the event loop's turn, all together.

Every answer sent at once is a system call that hands the bytes to the kernel, and on a
local peer (the benchmark's client, a load balancer or proxy on the same host) wakes that
peer. An event loop answers a burst of requests one task after another, some tens of
microseconds apart: each answer found its peer asleep again and paid a wake-up, charged
to the server's write. Held until the turn's tasks have run and then written one after the
other, a burst's answers reach peers that are still awake from the first
(docs/benchmarks.md, Durable Streams: 10 % less CPU per append in memory, and shorter
latencies).

:class:`CorkedTransport` wraps a connection's transport: :meth:`CorkedTransport.write_later`
queues an answer for the end of the turn (one callback per loop and turn,
:class:`TurnWriter`); every other write, and a close, first sends what is queued, so the
bytes of a connection keep their order whoever writes them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from typing import Any


class TurnWriter:
    """Sends the queued answers of one event loop's connections at the end of each turn."""

    __slots__ = ("_due", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the writers are kept per loop in a WeakKeyDictionary, whose entry a
        # strong reference to its own key would keep for ever (every closed loop, with it).
        self._loop = weakref.ref(loop)
        self._due: list[CorkedTransport] = []

    def due(self, transport: CorkedTransport) -> None:
        """``transport`` has something queued: send it at the end of this turn."""
        if not self._due:
            loop = self._loop()
            assert loop is not None  # called from the loop's own callbacks
            loop.call_soon(self._flush)
        self._due.append(transport)

    def _flush(self) -> None:
        due, self._due = self._due, []
        for transport in due:
            transport.flush()


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnWriter] = (
    weakref.WeakKeyDictionary()
)


def turn_writer(loop: asyncio.AbstractEventLoop) -> TurnWriter:
    """The :class:`TurnWriter` of ``loop``."""
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = TurnWriter(loop)
    return writer


class CorkedTransport(asyncio.Transport):
    """A connection's transport whose answers may wait for the end of the loop's turn."""

    __slots__ = ("_pending", "_transport", "_writer", "waiting")

    def __init__(self, transport: asyncio.Transport, writer: TurnWriter) -> None:
        super().__init__()
        self._transport = transport
        self._writer = writer
        self._pending: list[bytes] = []
        #: How many bytes wait for the end of the turn.
        self.waiting = 0

    def write_later(self, data: bytes) -> None:
        """Send ``data`` at the end of this turn of the loop, after what is queued."""
        if not self._pending:
            self._writer.due(self)
        self._pending.append(data)
        self.waiting += len(data)

    def flush(self) -> None:
        """Send what is queued now."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self.waiting = 0
        transport = self._transport
        if transport.is_closing():
            return  # the peer is gone, or the server closed after an error: nobody reads
        try:
            if len(pending) == 1:
                transport.write(pending[0])
            else:
                transport.writelines(pending)
        except (OSError, RuntimeError):  # uvloop refuses a write to a closed handle
            pass

    # What asyncio.Transport does, what is queued going first.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._pending:
            self.flush()
        self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        if self._pending:
            self.flush()
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self.waiting = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self.waiting

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()
