"""Cost of sessions and rate limits per request: throughput, latency, Redis commands.

Drives the ASGI stack directly (no HTTP client or server in the way), with ``--tasks``
concurrent callers, each one a returning visitor with its own session cookie (so sessions are
read, not created, and each visitor has its own rate-limit counter). Stacks compared in the
same run:

* ``bare``: the endpoint alone (the baseline);
* ``redis_get``: the endpoint plus one plain redis-py GET (what any Redis-backed session
  costs at least);
* ``sessions``: ``SessionMiddleware`` on memory and on Redis;
* ``sessions+limits``: plus ``RateLimitMiddleware`` (moving window, bans) with a limit high
  enough never to refuse.

Run: ``python bench/sessions_ratelimit.py`` (starts a private redis-server; or
``--redis-url``). Reports medians of ``--runs`` runs, as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import PrivateRedis, median, percentile  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from chatscale.config import load_settings  # noqa: E402
from chatscale.ratelimit import RateLimitMiddleware, RateLimits, Rule  # noqa: E402
from chatscale.redis import RedisConnection, connect  # noqa: E402
from chatscale.sessions import SessionMiddleware, create_session_manager  # noqa: E402

Asgi = ASGIApp


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def scope_for(cookie: bytes) -> dict[str, Any]:
    return {
        "type": "http", "method": "POST", "path": "/api/chat", "scheme": "http",
        "headers": [(b"cookie", cookie)], "client": ("127.0.0.1", 4000),
    }  # fmt: skip


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def drive(app: Asgi, cookies: list[bytes], requests: int, tasks: int) -> dict[str, float]:
    latencies: list[int] = []
    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def worker(cookie: bytes, count: int) -> None:
        for _ in range(count):
            start = time.perf_counter_ns()
            await app(scope_for(cookie), _receive, send)
            latencies.append(time.perf_counter_ns() - start)

    per_task = requests // tasks
    started = time.perf_counter()
    await asyncio.gather(*(worker(cookies[i % len(cookies)], per_task) for i in range(tasks)))
    elapsed = time.perf_counter() - started
    if any(s != 200 for s in statuses):
        raise RuntimeError("a request was refused: raise the benchmark's limit")
    latencies.sort()
    return {
        "req_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) / 1e6,
        "p99_ms": percentile(latencies, 99) / 1e6,
    }


async def commands_per_request(
    conn: RedisConnection, run: Callable[[], Awaitable[Any]], requests: int
) -> float:
    client = conn.client
    await client.config_resetstat()
    await run()
    stats = await client.info("commandstats")
    total = sum(
        int(v["calls"]) for k, v in stats.items()
        if k.removeprefix("cmdstat_").split("|")[0] not in {"info", "config"}
    )  # fmt: skip
    return total / requests


async def one_run(redis_url: str, requests: int, tasks: int) -> dict[str, dict[str, float]]:
    prefix = "bench" + secrets.token_hex(4)
    common: dict[str, Any] = {
        "session_secret": "b" * 48, "chat_rate_limit": f"{2 * requests}/minute",
        "chat_concurrency_limit": 0,
    }  # fmt: skip
    memory_settings = load_settings(**common)
    redis_settings = load_settings(
        use_redis=True, redis_uri=redis_url, redis_key_prefix=prefix, **common
    )
    assert redis_settings.redis is not None
    conn = await connect(redis_settings.redis)
    mem_limits = await RateLimits.create(memory_settings)
    redis_limits = await RateLimits.create(redis_settings, conn)
    results: dict[str, dict[str, float]] = {}
    try:

        async def with_get(scope: Scope, receive: Receive, send: Send) -> None:
            await conn.client.get(conn.keys.key("bench", "x"))
            await endpoint(scope, receive, send)

        stacks: dict[str, tuple[Asgi, Any]] = {}
        for name, settings, connection, limits in (
            ("memory", memory_settings, None, mem_limits),
            ("redis", redis_settings, conn, redis_limits),
        ):
            manager = create_session_manager(settings, connection)
            cookies = []
            for _ in range(tasks):
                opened = await manager.open([])
                header = (await manager.commit(opened, secure=False))[0][1]
                cookies.append(header.split(b";")[0])
            sessions = SessionMiddleware(endpoint, manager)
            limited = SessionMiddleware(
                RateLimitMiddleware(endpoint, [Rule(limits.chat, "/api/chat")]), manager
            )
            stacks[f"sessions ({name})"] = (sessions, cookies)
            stacks[f"sessions+limits ({name})"] = (limited, cookies)
        redis_cookies = stacks["sessions (redis)"][1]
        order: list[tuple[str, Asgi, list[bytes]]] = [
            ("bare", endpoint, redis_cookies),
            ("redis_get", with_get, redis_cookies),
            *((n, app, c) for n, (app, c) in stacks.items()),
        ]
        for name, app, cookies in order:
            await drive(app, cookies, min(requests, 500), tasks)  # warm-up
            results[name] = await drive(app, cookies, requests, tasks)
            if "redis" in name:
                results[name]["cmds/req"] = await commands_per_request(
                    conn, functools.partial(drive, app, cookies, 1000, tasks), 1000
                )
    finally:
        await redis_limits.aclose()
        await mem_limits.aclose()
        await conn.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="use this Redis instead of a private one")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    private = None if args.redis_url else PrivateRedis()
    if private is not None:
        private.start()
    try:
        url = args.redis_url or (private.url if private else "")
        runs = [asyncio.run(one_run(url, args.requests, args.tasks)) for _ in range(args.runs)]
    finally:
        if private is not None:
            private.stop()
    names = list(runs[0])
    bare = median([r["bare"]["req_s"] for r in runs])
    print(f"{args.requests} requests, {args.tasks} tasks, medians of {args.runs} runs")
    print(f"{'stack':32} {'req/s':>9} {'x bare':>7} {'p50 ms':>8} {'p99 ms':>8} {'cmds/req':>9}")
    for name in names:
        rate = median([r[name]["req_s"] for r in runs])
        p50 = median([r[name]["p50_ms"] for r in runs])
        p99 = median([r[name]["p99_ms"] for r in runs])
        cmds = [r[name].get("cmds/req") for r in runs]
        shown = f"{statistics.median([c for c in cmds if c is not None]):.2f}" if cmds[0] else "-"
        print(f"{name:32} {rate:9.0f} {rate / bare:7.3f} {p50:8.3f} {p99:8.3f} {shown:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
