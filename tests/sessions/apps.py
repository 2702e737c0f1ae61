"""A small Starlette app exercising the session API, and helpers to talk to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chatscale.sessions import SessionManager, SessionMiddleware, get_session

SECRET = "s" * 48
COOKIE = "chatscale_session"


async def whoami(request: Request) -> Response:
    session = get_session(request)
    return JSONResponse(
        {
            "user": session.user_id,
            "data": dict(session),
            "new": session.is_new,
            "anonymous": session.is_anonymous,
        }
    )


async def put(request: Request) -> Response:
    session = get_session(request)
    for key, value in request.query_params.items():
        session[key] = value
    return JSONResponse({"ok": True})


async def login(request: Request) -> Response:
    session = get_session(request)
    session.user_id = request.query_params["user"]
    session.rotate()
    return JSONResponse({"user": session.user_id})


async def logout(request: Request) -> Response:
    get_session(request).destroy()
    return JSONResponse({"ok": True})


async def bad(request: Request) -> Response:
    get_session(request)["when"] = object()
    return JSONResponse({"ok": True})


async def stream(request: Request) -> Response:
    session = get_session(request)

    async def body() -> AsyncIterator[bytes]:
        yield b"first\n"
        session["streamed"] = "yes"  # after the response started
        yield b"second\n"

    return StreamingResponse(body())


def make_app(manager: SessionManager) -> Starlette:
    routes = [
        Route("/whoami", whoami),
        Route("/put", put),
        Route("/login", login),
        Route("/logout", logout),
        Route("/bad", bad),
        Route("/stream", stream),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, manager=manager)])


def client(app: Any, base_url: str = "http://test") -> httpx.AsyncClient:
    """A client that keeps no cookies of its own: tests pass them explicitly."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # accepts no cookie
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url, cookies=jar)


def set_cookie(response: httpx.Response) -> str | None:
    """The raw Set-Cookie header for the session cookie, if any."""
    for value in response.headers.get_list("set-cookie"):
        if value.startswith((COOKIE + "=", "__Host-" + COOKIE + "=")):
            return value
    return None


def cookie_value(response: httpx.Response) -> str:
    header = set_cookie(response)
    assert header is not None, "expected a session cookie"
    return header.split(";")[0].split("=", 1)[1]


def with_cookie(value: str) -> dict[str, str]:
    return {"cookie": f"{COOKIE}={value}"}
