"""Draining on SIGTERM: refuse new chats, tell SSE clients to reconnect, hand jobs over.

``chatscale serve`` runs :class:`DrainingServer`: its first SIGTERM/SIGINT starts the drain
instead of stopping at once. While draining, ``/readyz`` answers 503 (the load balancer
takes the instance out), ``POST /api/chat`` answers 503 with ``Retry-After``, every open
event stream receives a ``reconnect`` event and is closed (EventSource reconnects through
the load balancer to another instance, resuming by event id), and the stream manager lets
running generations finish or hands them over (STREAM_DRAIN_TIMEOUT). Then the server exits.
A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

log = logging.getLogger("chatscale.server")

#: The server of this process (set by :class:`DrainingServer`), so the app can stop it.
_current: DrainingServer | None = None


class Lifecycle:
    """The draining state of one application."""

    def __init__(self) -> None:
        self.draining = False
        self.drained = asyncio.Event()
        self._drain: Callable[[], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None

    def on_drain(self, drain: Callable[[], Awaitable[None]]) -> None:
        """What draining does (hand the jobs over); set by the application at start-up."""
        self._drain = drain

    def begin_drain(self) -> asyncio.Task[None]:
        """Start draining (idempotent); the server exits when it is done."""
        if self._task is None:
            self.draining = True
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    async def _run(self) -> None:
        log.info("draining: refusing new chats, handing running answers over")
        try:
            if self._drain is not None:
                await self._drain()
        except Exception:
            log.exception("draining failed")
        finally:
            self.drained.set()
            server = _current
            if server is not None:
                server.should_exit = True


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first exit signal drains the application first."""

    lifecycle: Lifecycle | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        """Serve, registered as this process's server."""
        global _current
        _current = self
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain; second: exit now."""
        lifecycle = self.lifecycle
        if lifecycle is None or lifecycle.draining or self.should_exit:
            super().handle_exit(sig, frame)
            if lifecycle is not None and lifecycle.draining:
                self.force_exit = sig == signal.SIGINT or self.force_exit
            return
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lifecycle.begin_drain)


def attach(lifecycle: Lifecycle) -> None:
    """Make this process's uvicorn server drain ``lifecycle`` on its first exit signal.

    A :class:`DrainingServer` is told directly. A plain ``uvicorn.Server`` (``uvicorn
    --factory chatscale.server.app:app_from_env``, or a ``--workers`` child) is found through
    its installed signal handler, and a handler that drains first is put in front of it.
    """
    global _current
    if _current is not None:
        _current.lifecycle = lifecycle
        return
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    if not isinstance(server, uvicorn.Server):
        return  # not under uvicorn's signal handling (tests, other servers): nothing to do
    _current = server  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    original = server.handle_exit

    def drain_first(sig: int, frame: FrameType | None) -> None:
        if lifecycle.draining or server.should_exit:
            original(sig, frame)
        else:
            loop.call_soon_threadsafe(lifecycle.begin_drain)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, drain_first)
