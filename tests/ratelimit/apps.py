"""A Starlette app with sessions, the rate-limit middleware, a decorated route, a
dependency-style route and a generation route, as the chat server will wire them."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatscale.ratelimit import (
    ConcurrencyLimitExceeded,
    RateLimitExceeded,
    RateLimitMiddleware,
    RateLimits,
    Rule,
    rate_limited,
    refusal_exception_handler,
)
from chatscale.ratelimit.guard import concurrency_refusal, refusal_response
from chatscale.sessions import SessionManager, SessionMiddleware, get_session


def make_app(limits: RateLimits, sessions: SessionManager | None = None) -> Starlette:
    search_guard = limits.guard("2/minute", name="search")
    export_guard = limits.guard("1/minute", name="export")

    async def chat(request: Request) -> Response:
        user = get_session(request).user_id if "session" in request.scope else None
        return JSONResponse({"ok": True, "user": user})

    async def read(request: Request) -> Response:
        return JSONResponse({"ok": True})

    @rate_limited(search_guard)
    async def search(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def export(request: Request) -> Response:
        await export_guard(request)  # what FastAPI's Depends(export_guard) does
        return JSONResponse({"ok": True})

    async def generate(request: Request) -> Response:
        try:
            async with limits.generation(limits.identity(request.scope)):
                return JSONResponse({"ok": True})
        except ConcurrencyLimitExceeded as exc:
            return refusal_response(concurrency_refusal(exc))

    middleware = []
    if sessions is not None:
        middleware.append(Middleware(SessionMiddleware, manager=sessions))
    middleware.append(
        Middleware(RateLimitMiddleware, rules=[Rule(limits.chat, "/chat", frozenset({"POST"}))])
    )
    return Starlette(
        routes=[
            Route("/chat", chat, methods=["POST"]),
            Route("/chat", read, methods=["GET"]),
            Route("/search", search),
            Route("/export", export),
            Route("/generate", generate),
        ],
        middleware=middleware,
        exception_handlers={RateLimitExceeded: refusal_exception_handler},
    )
