"""The ASGI application: ``create_app(settings)``, or ``app_from_env()`` for uvicorn."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from importlib.resources import files

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from chatscale.config import Settings, load_settings
from chatscale.durable import chat_view
from chatscale.durable.service import DurableService
from chatscale.logs import configure_logging
from chatscale.runtime import tune_gc
from chatscale.server import api_ai_sdk, api_chat, api_misc
from chatscale.server.bodylimit import BodyBound, BodyLimitMiddleware
from chatscale.server.errors import (
    ApiError,
    CatchAllMiddleware,
    api_error,
    http_error,
)
from chatscale.server.express import ExpressLane
from chatscale.server.head import ResponseHeadMiddleware, ResponseHeads
from chatscale.server.lifecycle import attach
from chatscale.server.openapi import build_openapi
from chatscale.server.preflight import check_settings
from chatscale.server.resume import ResumeTokens
from chatscale.server.services import new_services
from chatscale.server.shortcut import Lane, ShortcutStarlette, wrap
from chatscale.sessions import (
    OriginCheckMiddleware,
    SessionManager,
    SessionMiddleware,
    create_session_manager,
)
from chatscale.sessions.middleware import NewSessionGate

log = logging.getLogger("chatscale.server")
STATIC = files("chatscale.server") / "static"


async def index(request: Request) -> Response:
    """The chat page."""
    return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})


def create_app(settings: Settings | None = None) -> Starlette:
    """The whole server. Services start with the application's lifespan."""
    settings = settings or load_settings()
    check_settings(settings)  # a missing or weak SESSION_SECRET fails before serving
    svc = new_services(settings)
    document = build_openapi(
        durable_streams=settings.durable_streams,
        durable_streams_path=settings.durable_streams_path,
        durable_streams_open=settings.durable_streams_auth == "none",
    )
    durable = DurableService(settings) if settings.durable_streams else None
    if durable is not None:
        protocol = durable.app
        svc.metrics.watch_durable(lambda: protocol.followers, protocol.fanout_stats)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.services = svc
        try:
            await svc.start()
            session_holder.manager = create_session_manager(
                settings, svc.redis, svc.session_store()
            )
            svc.tokens = ResumeTokens.for_sessions(session_holder.manager.config)
            session_holder.gate = svc.session_gate()
            attach(svc.lifecycle)
            if durable is not None:
                await durable.start(svc.redis, svc.limits)
                # Draining also ends the protocol's live reads (they hold connections open).
                drain_services = svc.drain

                async def drain() -> None:
                    durable.app.end_live_reads()
                    await drain_services()

                svc.lifecycle.on_drain(drain)
            yield
        finally:
            if durable is not None:
                await durable.close()
            if not svc.lifecycle.drained.is_set() and svc.streams is not None:
                await svc.lifecycle.begin_drain()
            await svc.close()

    session_holder = _SessionHolder()
    # Every request passes these; the application's own routes also the session middleware.
    chain = [
        Middleware(ResponseHeadMiddleware, instance_id=svc.instance_id, metrics=svc.metrics),
        Middleware(
            BodyLimitMiddleware,
            bound_for=body_bounds(settings),
            timeout_s=settings.request_body_timeout,
        ),
        Middleware(CatchAllMiddleware),
        Middleware(OriginCheckMiddleware, allowed_origins=frozenset(settings.allowed_origins)),
    ]
    # Event streams send their body past the middleware below (chatscale.server.shortcut).
    app = ShortcutStarlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *api_chat.routes,
            *api_ai_sdk.routes,
            *api_misc.routes,
            *(chat_view.routes if durable else []),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
        middleware=[*chain, Middleware(_LateSessionMiddleware, holder=session_holder)],
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
        },
        lifespan=lifespan,
    )
    if durable is not None:
        # The protocol answers its own errors and needs no session: its requests skip
        # Starlette's error middleware, router and exception handlers (the setting keeps
        # DURABLE_STREAMS_PATH apart from every other route's paths).
        # Its plain requests take an express lane through the same layers (one step
        # instead of four wrappers); the others the chain itself.
        base = settings.durable_streams_path
        express = ExpressLane(
            durable.app,
            full=wrap(durable.app, chain),
            heads=ResponseHeads(svc.instance_id, svc.metrics),
            bound=durable_body_bound(settings),
            allowed_origins=frozenset(settings.allowed_origins),
        )
        app.lanes = (Lane(base + "/", base + "/{name}", express),)
    app.state.services = svc
    app.state.durable = durable
    return app


def body_bounds(settings: Settings) -> Callable[[Scope], BodyBound]:
    """Each request's body bound: the chat route's from MAX_MESSAGE_CHARS, the AI SDK
    route's fixed (it sends the whole conversation), every other route's
    MAX_REQUEST_BODY_BYTES."""
    chat = api_chat.chat_body_bound(settings.max_message_chars)
    other = BodyBound(settings.max_request_body_bytes, "MAX_REQUEST_BODY_BYTES")
    durable = durable_body_bound(settings)
    durable_prefix = settings.durable_streams_path + "/"

    def bound_for(scope: Scope) -> BodyBound:
        if settings.durable_streams and scope["path"].startswith(durable_prefix):
            return durable
        if scope["method"] != "POST":
            return other
        if scope["path"] == "/api/chat":
            return chat
        return api_ai_sdk.BODY_BOUND if scope["path"] == api_ai_sdk.PATH else other

    return bound_for


def durable_body_bound(settings: Settings) -> BodyBound:
    """The body bound of the Durable Streams protocol's requests."""
    return BodyBound(settings.durable_streams_max_body, "DURABLE_STREAMS_MAX_BODY")


class _SessionHolder:
    manager: SessionManager | None = None
    gate: NewSessionGate | None = None


class _LateSessionMiddleware:
    """Session middleware whose manager is built at start-up (it needs the Redis handle)."""

    def __init__(self, app: ASGIApp, holder: _SessionHolder) -> None:
        self.app = app
        self.holder = holder
        self._inner: SessionMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self.holder.manager
        if (
            scope["type"] not in ("http", "websocket")
            or manager is None
            # Probes, metrics and static files need no session (and must not create one).
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        if self._inner is None:
            self._inner = SessionMiddleware(self.app, manager, gate=self.holder.gate)
        await self._inner(scope, receive, send)


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory chatscale.server.app:app_from_env``."""
    settings = load_settings()
    # A --workers child (a fresh interpreter): log like the parent.
    configure_logging(settings.log_level, settings.log_format, settings.access_log)
    app = create_app(settings)
    tune_gc(settings.gc_threshold)
    return app
