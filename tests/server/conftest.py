"""Fixtures of the server tests: an app on a loopback port and a client with a session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from chatscale.config import load_settings
from tests.server.helpers import ServerThread


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """The embedded default (memory backends, demo model), fast demo: 20 tokens at 200/s."""
    settings = load_settings(demo_tokens_per_second=200, demo_response_tokens=20)
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
async def client(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    """A client keeping its session cookie."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http
