"""Running the app on a real loopback port, and reading Server-Sent Events."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from chatscale.config import Settings
from chatscale.llm import DEMO_MODEL, ChatMessage, CompletionRequest, DemoProvider
from chatscale.server import create_app
from chatscale.server.protocol import EdgeConfig


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """``create_app(settings)`` under uvicorn in a thread with its own event loop."""

    def __init__(self, settings: Settings, *, loop: str = "auto", edge: bool = True) -> None:
        """``edge``: on ``chatscale serve``'s own HTTP protocol (header limits, one write
        for a head and its body, direct body writers), as in production; ``False``: on
        uvicorn's, as behind another ASGI server."""
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "log_level": "warning",
            "access_log": settings.access_log,
            "timeout_graceful_shutdown": 2,
            "loop": loop,
        }
        config = (
            EdgeConfig(
                self.app,
                max_header_bytes=settings.max_request_header_bytes,
                header_timeout_s=settings.request_header_timeout,
                **options,
            )
            if edge
            else uvicorn.Config(self.app, **options)
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(15)

    @property
    def services(self) -> Any:
        """The app's services (read them; call into them only through the server's loop)."""
        return self.app.state.services


@dataclass
class SSEvent:
    """One parsed event."""

    id: str | None
    event: str
    data: Any


async def read_events(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
    read_timeout: float = 30.0,
) -> list[SSEvent]:
    """Events of one SSE request until a final/reconnect event, ``limit`` events or the end."""
    events: list[SSEvent] = []
    async with client.stream("GET", url, headers=headers, timeout=read_timeout) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in parse(response.aiter_lines()):
            events.append(event)
            if event.event in ("done", "aborted", "error", "reconnect"):
                break
            if limit is not None and len(events) >= limit:
                break
    return events


async def parse(lines: AsyncIterator[str]) -> AsyncIterator[SSEvent]:
    """SSE lines to events (comments and bare ``retry:`` blocks skipped; a ``reconnect``
    event without data still counts: the server sends it that way)."""
    event_id: str | None = None
    kind = "message"
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield SSEvent(event_id, kind, json.loads("\n".join(data)))
            elif kind == "reconnect":
                yield SSEvent(None, kind, {})
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)


def text_of(events: list[SSEvent]) -> str:
    """The text the deltas of ``events`` add up to."""
    return "".join(e.data["text"] for e in events if e.event == "delta")


def expected(message: str, tokens: int = 20, history: list[ChatMessage] | None = None) -> str:
    """The demo model's whole answer to ``message`` (first message of a conversation)."""
    provider = DemoProvider(tokens_per_second=1, tokens=tokens)
    messages = [*(history or []), ChatMessage("user", message)]
    return "".join(provider.full_answer(CompletionRequest(DEMO_MODEL, messages)))
