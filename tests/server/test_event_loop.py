"""SERVER_EVENT_LOOP: ``chatscale serve`` runs uvloop by default when it is installed, asyncio's
loop on request or when uvloop is missing, and refuses ``uvloop`` without it."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatscale.config import load_settings
from chatscale.errors import ConfigError
from chatscale.server import preflight
from chatscale.server.run import _config, describe
from tests.server.procs import ServeProcess


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    found = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "uvloop" else found(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_uvloop_by_default_and_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.server_event_loop == "auto"
    assert preflight.event_loop(settings) == "uvloop"  # installed by uvicorn[standard]
    assert _config(object(), settings).loop == "uvloop"
    assert "uvloop event loop" in describe(settings)
    monkeypatch.setenv("SERVER_EVENT_LOOP", "Asyncio")
    chosen = load_settings()
    assert preflight.event_loop(chosen) == "asyncio"
    assert _config(object(), chosen).loop == "asyncio"


def test_without_uvloop_auto_is_asyncio_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_uvloop(monkeypatch)
    assert preflight.event_loop(load_settings()) == "asyncio"
    monkeypatch.setenv("SERVER_EVENT_LOOP", "uvloop")
    with pytest.raises(ConfigError) as caught:
        preflight.check_settings(load_settings())
    assert caught.value.variable == "SERVER_EVENT_LOOP"
    assert "auto or asyncio" in str(caught.value)


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == "SERVER_EVENT_LOOP"


def _uvloop_mapped(server: ServeProcess) -> bool:
    assert server.proc is not None
    return "uvloop" in Path(f"/proc/{server.proc.pid}/maps").read_text()


@pytest.mark.parametrize(("setting", "uvloop"), [(None, True), ("asyncio", False)])
def test_serve_runs_the_chosen_loop(tmp_path: Path, setting: str | None, uvloop: bool) -> None:
    env = {
        "DEMO_RESPONSE_TOKENS": "3",
        "DEMO_TOKENS_PER_SECOND": "1000",
        # No SQLite file in the working directory.
        "FORCED_IN_MEMORY_CACHE_NAMESPACES": "CONVERSATIONS",
    }
    if setting is not None:
        env["SERVER_EVENT_LOOP"] = setting
    server = ServeProcess(env, tmp_path / f"serve-{time.monotonic_ns()}.log")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            started = client.post("/api/chat", json={"message": "hi"})
            assert started.status_code == 202, started.text
            stream = client.get(f"/api/chat/stream/{started.json()['stream_id']}")
            assert "event: done" in stream.text
        # The loop's extension module is loaded only when uvicorn runs it.
        assert _uvloop_mapped(server) is uvloop
    finally:
        server.stop()
    banner = "uvloop event loop" if uvloop else "asyncio event loop"
    assert banner in server.log.read_text()
