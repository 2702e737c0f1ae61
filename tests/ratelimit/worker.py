"""One chatscale instance in its own process, for the cross-process tests.

Configured only by the environment (USE_REDIS, REDIS_URI, REDIS_KEY_PREFIX, SESSION_SECRET,
CHAT_RATE_LIMIT, CHAT_CONCURRENCY_LIMIT), exactly as a server starts. Prints ``ready``, waits
for a line on stdin, then:

* ``hits N COOKIE``: sends N ``POST /chat`` through session + rate-limit middleware and
  prints one JSON line ``[[status, retry_after, user], ...]``;
* ``hold USER LEASE_TTL_S``: takes a generation slot of USER, prints ``acquired`` or
  ``refused``, and holds it (renewing) until the next stdin line.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatscale.config import load_settings
from chatscale.ratelimit import ConcurrencyLimitExceeded, RateLimitMiddleware, RateLimits, Rule
from chatscale.redis import connect
from chatscale.sessions import (
    SessionManager,
    SessionMiddleware,
    create_session_manager,
    get_session,
)


async def read_line() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


async def hits(limits: RateLimits, app_sessions: SessionManager, count: int, cookie: str) -> None:
    async def chat(request: Request) -> Response:
        return JSONResponse({"user": get_session(request).user_id})

    app = Starlette(
        routes=[Route("/chat", chat, methods=["POST"])],
        middleware=[
            Middleware(SessionMiddleware, manager=app_sessions),
            Middleware(RateLimitMiddleware, rules=[Rule(limits.chat, "/chat")]),
        ],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://instance") as http:
        print("ready", flush=True)
        await read_line()
        results = []
        for _ in range(count):
            response = await http.post("/chat", headers={"cookie": cookie})
            body = response.json()
            results.append(
                [response.status_code, response.headers.get("retry-after"), body.get("user")]
            )
    print(json.dumps(results), flush=True)


async def hold(limits: RateLimits, user: str) -> None:
    print("ready", flush=True)
    await read_line()
    try:
        async with limits.generation(user):
            print("acquired", flush=True)
            await read_line()
    except ConcurrencyLimitExceeded:
        print("refused", flush=True)


async def main() -> None:
    settings = load_settings()
    assert settings.redis is not None
    connection = await connect(settings.redis)
    mode = sys.argv[1]
    lease_ttl = float(sys.argv[4]) if mode == "hold" else 60.0
    limits = await RateLimits.create(settings, connection, lease_ttl_s=lease_ttl)
    try:
        if mode == "hits":
            manager = create_session_manager(settings, connection)
            await hits(limits, manager, int(sys.argv[2]), sys.argv[3])
        else:
            await hold(limits, sys.argv[2])
    finally:
        await limits.aclose()
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
