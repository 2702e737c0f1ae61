"""Refusals over HTTP: 429 with Retry-After and a JSON body, 403 while banned."""

from __future__ import annotations

from typing import Any

import httpx

from chatscale.ratelimit import RateLimits
from chatscale.redis import RedisConnection
from chatscale.sessions import MemorySessionStore, SessionConfig, SessionManager
from chatscale.sessions.cookies import derive_key
from tests.ratelimit.apps import make_app
from tests.ratelimit.helpers import open_limits
from tests.sessions.apps import client, cookie_value, with_cookie


def sessions() -> SessionManager:
    config = SessionConfig(
        signing_key=derive_key(b"k" * 40), ttl=3_600, cookie_name="chatscale_session"
    )
    return SessionManager(MemorySessionStore(), config)


def assert_refused(response: httpx.Response, status: int) -> int:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    retry = int(response.headers["retry-after"])
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "retry_after"}
    assert body["retry_after"] == retry and retry >= 1 and body["error"]
    return retry


async def test_middleware_answers_429_with_retry_after(backend: RedisConnection | None) -> None:
    async with open_limits(backend, chat_rate_limit="3/minute") as limits:
        app = make_app(limits, sessions())
        async with client(app) as http:
            cookie = cookie_value(await http.get("/chat"))  # GET is not limited
            statuses = [
                (await http.post("/chat", headers=with_cookie(cookie))).status_code
                for _ in range(3)
            ]
            assert statuses == [200, 200, 200]
            refused = await http.post("/chat", headers=with_cookie(cookie))
            retry = assert_refused(refused, 429)
            assert 55 <= retry <= 60
            assert "3 per 1 minute" in refused.json()["error"]
            assert (await http.get("/chat", headers=with_cookie(cookie))).status_code == 200
            # Another visitor has a budget of their own.
            other = cookie_value(await http.get("/chat"))
            assert (await http.post("/chat", headers=with_cookie(other))).status_code == 200


async def test_without_cookies_requests_count_per_address() -> None:
    async with open_limits(None, chat_rate_limit="2/minute") as limits:
        app = make_app(limits, sessions())
        async with client(app) as http:
            statuses = [(await http.post("/chat")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_without_session_middleware_requests_count_per_address() -> None:
    async with open_limits(
        None, chat_rate_limit="1/minute", trusted_proxies="127.0.0.1/32"
    ) as limits:
        app = make_app(limits, sessions=None)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            a = await http.post("/chat", headers={"x-forwarded-for": "198.51.100.1"})
            b = await http.post("/chat", headers={"x-forwarded-for": "198.51.100.2"})
            c = await http.post("/chat", headers={"x-forwarded-for": "198.51.100.1"})
    assert [a.status_code, b.status_code, c.status_code] == [200, 200, 429]


async def test_violations_lead_to_a_403_ban(backend: RedisConnection | None) -> None:
    async with open_limits(
        backend, chat_rate_limit="1/minute", ban_violation_limit=3, ban_duration=300
    ) as limits:
        app = make_app(limits, sessions())
        async with client(app) as http:
            cookie = cookie_value(await http.get("/chat"))
            headers = with_cookie(cookie)
            assert (await http.post("/chat", headers=headers)).status_code == 200
            assert (await http.post("/chat", headers=headers)).status_code == 429
            assert (await http.post("/chat", headers=headers)).status_code == 429
            ban = await http.post("/chat", headers=headers)  # third violation
            assert 295 <= assert_refused(ban, 403) <= 300
            assert "banned" in ban.json()["error"]
            again = await http.post("/chat", headers=headers)
            assert_refused(again, 403)
            # Bans cover every guarded route of that user, not only the one abused.
            assert_refused(await http.get("/search", headers=headers), 403)


async def test_decorator_and_dependency_forms(backend: RedisConnection | None) -> None:
    async with open_limits(backend) as limits:
        app = make_app(limits, sessions())
        async with client(app) as http:
            cookie = cookie_value(await http.get("/chat"))
            headers = with_cookie(cookie)
            search = [(await http.get("/search", headers=headers)).status_code for _ in range(3)]
            assert search == [200, 200, 429]
            assert_refused(await http.get("/search", headers=headers), 429)
            assert (await http.get("/export", headers=headers)).status_code == 200
            assert_refused(await http.get("/export", headers=headers), 429)


async def test_generation_route_releases_its_slot(backend: RedisConnection | None) -> None:
    async with open_limits(backend, chat_concurrency_limit=1) as limits:
        app = make_app(limits, sessions())
        async with client(app) as http:
            cookie = cookie_value(await http.get("/chat"))
            for _ in range(3):  # each request holds and gives back the one slot
                assert (await http.get("/generate", headers=with_cookie(cookie))).status_code == 200
            identity = (
                "user:" + (await http.post("/chat", headers=with_cookie(cookie))).json()["user"]
            )
            async with limits.generation(identity):
                refused = await http.get("/generate", headers=with_cookie(cookie))
                assert_refused(refused, 429)
                assert refused.json()["error"] == "too many generations running: 1 of 1 allowed"


async def test_other_scopes_pass_through() -> None:
    async with open_limits(None) as limits:
        from chatscale.ratelimit import RateLimitMiddleware, Rule

        seen: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["type"])

        middleware = RateLimitMiddleware(app, [Rule(limits.chat)])
        await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
        await middleware({"type": "websocket", "path": "/chat"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"]


async def test_create_with_redis_needs_the_connection() -> None:
    import pytest

    from tests.ratelimit.helpers import settings_for

    settings = settings_for(None)
    settings = settings.model_copy(update={"use_redis": True})
    with pytest.raises(ValueError, match="RedisConnection"):
        await RateLimits.create(settings, None)


async def test_rules_resolved_per_request() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from chatscale.ratelimit import RateLimitMiddleware, Rule

    rules: list[Rule] = []

    async def ok(request: Request) -> Response:
        return JSONResponse({})

    app = Starlette(
        routes=[Route("/", ok)], middleware=[Middleware(RateLimitMiddleware, rules=lambda: rules)]
    )
    async with open_limits(None, chat_rate_limit="1/minute") as limits, client(app) as http:
        assert [(await http.get("/")).status_code for _ in range(3)] == [200, 200, 200]
        rules.append(Rule(limits.chat))
        assert [(await http.get("/")).status_code for _ in range(2)] == [200, 429]
