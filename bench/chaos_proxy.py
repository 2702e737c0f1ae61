"""A loopback TCP proxy between chatscale instances and Redis that misbehaves on demand.

``FaultProxy`` forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>`` and can

* add latency (:meth:`set_latency`): every chunk is delivered ``delay`` seconds after it was
  read, in order, in both directions;
* reset every open connection (:meth:`reset`): RST, as a crashed middlebox would; with
  ``hold`` new connections are reset as well for that long;
* black-hole (:meth:`blackhole`): every open and every new connection silently swallows all
  data from then on, forever (no RST, no FIN: only the client's own timeouts notice), and
  new connections are accepted but never reach Redis while the black hole lasts.

Only 127.0.0.1 is bound and connected to. Used by ``bench/chaos.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
_READ_BYTES = 65536
_QUEUE_CHUNKS = 1024


@dataclass(eq=False)
class _Link:
    """One proxied connection: both sockets, and whether it fell into a black hole."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    swallowed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        """Close both sockets with RST."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """Forwards to ``target_port``; latency, resets and black holes on demand."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.latency_s = 0.0
        self.resets = 0
        self._reset_until = 0.0
        self._blackholed = False
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultProxy:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    # -- faults -------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk by ``seconds`` (0 = none) from now on."""
        self.latency_s = max(0.0, seconds)

    def reset(self, hold: float = 0.0) -> None:
        """RST every open connection; for ``hold`` seconds, new ones too."""
        self.resets += 1
        self._reset_until = time.monotonic() + hold
        for link in list(self._links):
            link.abort()

    def blackhole(self, on: bool = True) -> None:
        """Start (or end) a black hole: connections open now are swallowed forever."""
        self._blackholed = on
        if on:
            for link in self._links:
                link.swallowed = True

    def heal(self) -> None:
        """No latency, no black hole for new connections (swallowed ones stay dead)."""
        self.latency_s = 0.0
        self._reset_until = 0.0
        self._blackholed = False

    # -- forwarding ---------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        link = _Link(client=writer)
        self._links.add(link)
        try:
            await self._serve(link, reader)
        except asyncio.CancelledError:
            pass  # closing: asyncio would log a cancelled connection handler
        finally:
            self._links.discard(link)
            for pump in link.tasks:
                pump.cancel()
            link.abort()
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, link: _Link, reader: asyncio.StreamReader) -> None:
        if time.monotonic() < self._reset_until:
            return
        if self._blackholed:
            link.swallowed = True
            await _drain_forever(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            return
        link.upstream = up_writer
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, link.client)),
        ]
        await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        sender = asyncio.create_task(_deliver(queue, writer))
        try:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(_READ_BYTES):
                    if link.swallowed:
                        continue
                    await queue.put((time.monotonic() + self.latency_s, data))
            await queue.join()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def _deliver(queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
    """Write queued chunks in order, each not before its due time.

    A failed write drops the connection, which ends the other direction's pump too.
    """
    try:
        while True:
            due, data = await queue.get()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
            queue.task_done()
    except OSError:
        writer.transport.abort()


async def _drain_forever(reader: asyncio.StreamReader) -> None:
    """Read and drop everything until the peer closes (a black-holed new connection)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while await reader.read(_READ_BYTES):
            pass
