"""Limits hold across separate processes sharing one Redis (three instances)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from chatscale.ratelimit import ConcurrencyLimiter, RedisConcurrency
from chatscale.redis import RedisConnection
from chatscale.sessions import RedisSessionStore, SessionConfig, SessionManager
from chatscale.sessions.cookies import derive_key
from tests.ratelimit.helpers import uri_of

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]
SECRET = "p" * 48
BUDGET_S = 60


class Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> str:
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            assert self.process.stderr is not None
            error = (await self.process.stderr.read()).decode()
            raise AssertionError(f"worker ended early: {error[-2000:]}")
        return raw.decode().strip()

    async def send(self, text: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        await self.process.stdin.drain()


@asynccontextmanager
async def workers(
    conn: RedisConnection, argv: list[str], count: int, tmp_path: Path, **env: str
) -> AsyncIterator[list[Worker]]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "USE_REDIS"))},
        "USE_REDIS": "true",
        "REDIS_URI": uri_of(conn.config),
        "REDIS_KEY_PREFIX": conn.keys.prefix,
        "SESSION_SECRET": SECRET,
        "PYTHONPATH": str(ROOT / "src"),
        **env,
    }
    started = [
        Worker(
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=tmp_path,
                env=environment,
            )
        )
        for _ in range(count)
    ]
    try:
        async with asyncio.timeout(BUDGET_S):
            for worker in started:
                assert await worker.line() == "ready"
            yield started
    finally:
        for worker in started:
            if worker.process.returncode is None:
                worker.process.kill()
            await worker.process.communicate()


async def test_three_processes_admit_the_limit_once(
    redis_conn: RedisConnection, tmp_path: Path
) -> None:
    # A session made here (a fourth instance) is the visitor all three processes see.
    config = SessionConfig(
        signing_key=derive_key(SECRET.encode()), ttl=600, cookie_name="chatscale_session"
    )
    manager = SessionManager(RedisSessionStore(redis_conn), config)
    opened = await manager.open([])
    header = (await manager.commit(opened, secure=False))[0][1].decode()
    cookie = header.split(";")[0]
    async with workers(
        redis_conn,
        ["hits", "10", cookie],
        3,
        tmp_path,
        CHAT_RATE_LIMIT="10/minute",
        BAN_VIOLATION_LIMIT="20",
    ) as started:
        for worker in started:
            await worker.send()
        results = [json.loads(await worker.line()) for worker in started]
    flat = [r for per_process in results for r in per_process]
    assert len(flat) == 30
    admitted = [r for r in flat if r[0] == 200]
    refused = [r for r in flat if r[0] in (429, 403)]
    assert len(admitted) == 10 and len(refused) == 20
    # The 20th violation, whichever process saw it, banned the visitor: violations are
    # counted across processes too.
    assert [r[0] for r in refused].count(403) == 1
    assert {r[2] for r in admitted} == {opened.session.user_id}  # one visitor everywhere
    assert all(1 <= int(r[1]) <= 60 for r in refused if r[0] == 429)
    assert all(895 <= int(r[1]) <= 900 for r in refused if r[0] == 403)  # BAN_DURATION


async def test_concurrency_limit_holds_across_processes(
    redis_conn: RedisConnection, tmp_path: Path
) -> None:
    user = "user:proc"
    async with workers(
        redis_conn, ["hold", user, "x", "1.0"], 3, tmp_path, CHAT_CONCURRENCY_LIMIT="2"
    ) as started:
        for worker in started:
            await worker.send()
        outcomes = [await worker.line() for worker in started]
        assert sorted(outcomes) == ["acquired", "acquired", "refused"]
        holders = [w for w, o in zip(started, outcomes, strict=True) if o == "acquired"]
        observer = ConcurrencyLimiter(RedisConcurrency(redis_conn), 2)
        assert await observer.running(user) == 2
        # A holder dies without releasing: its slot comes back after the lease TTL (1 s),
        # while the other holder keeps renewing past it.
        holders[0].process.send_signal(signal.SIGKILL)
        await holders[0].process.wait()
        assert await observer.running(user) == 2
        await asyncio.sleep(1.3)
        assert await observer.running(user) == 1
        lease = await observer.acquire(user)
        await observer.release(lease)
        await holders[1].send("release")
        assert await holders[1].process.wait() == 0
    assert await observer.running(user) == 0
