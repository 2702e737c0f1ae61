"""``chatscale serve``: start-up errors, and draining on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import httpx

from tests.server.helpers import parse, read_events, text_of
from tests.server.procs import CHATSCALE, ServeProcess


def test_config_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = [
        (["serve", "--port", "70000"], {}, "PORT='70000'"),
        (["serve", "--workers", "0"], {}, "--workers='0'"),
        (["serve"], {"DEMO_TOKENS_PER_SECOND": "fast"}, "DEMO_TOKENS_PER_SECOND"),
        (["serve"], {"USE_REDIS": "true", "REDIS_URI": "redis://127.0.0.1:1"}, "SESSION_SECRET"),
    ]
    for args, env, needle in cases:
        done = subprocess.run(
            [*CHATSCALE, *args],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], done.stderr
        assert lines[0].startswith("chatscale: configuration error:")


async def test_sigterm_drains_then_exits(tmp_path: Path) -> None:
    env = {"DEMO_TOKENS_PER_SECOND": "20", "DEMO_RESPONSE_TOKENS": "40"}
    server = ServeProcess(env, tmp_path / "serve.log")
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = (await client.post("/api/chat", json={"message": "drain me"})).json()
            url = f"/api/chat/stream/{started['stream_id']}"
            first = await read_events(client, url, limit=2)
            seen: list[str] = []

            async def follow() -> None:
                async with client.stream(
                    "GET", url, headers={"Last-Event-ID": first[-1].id or ""}
                ) as response:
                    async for event in parse(response.aiter_lines()):
                        seen.append(event.event)
                        if event.event == "reconnect":
                            return

            follower = asyncio.create_task(follow())
            await asyncio.sleep(0.3)
            server.signal(signal.SIGTERM)
            await asyncio.wait_for(follower, 5)
            assert seen[-1] == "reconnect"  # open streams are told to go elsewhere
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            refused = await client.post("/api/chat", json={"message": "too late"})
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            # The running answer still completes here (memory backend: nobody to hand
            # it to); a client resuming during the drain is asked to reconnect again.
            again = await read_events(client, url, headers={"Last-Event-ID": first[-1].id or ""})
            assert [e.event for e in again] == ["reconnect"]
            status = (await client.get(f"{url}/status")).json()
            assert status["status"] == "running"
        code = await asyncio.to_thread(server.wait, 15)
        assert code == 0
        log = (tmp_path / "serve.log").read_text()
        assert "draining" in log
        assert text_of(first)
    finally:
        server.kill()
