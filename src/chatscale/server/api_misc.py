"""Conversations, the session's event feed, models, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from chatscale.db.conversations import SqlConversationStore
from chatscale.numbers import parse_whole
from chatscale.paging import MAX_PAGE, page_of_list
from chatscale.server.api_chat import _respond, services, user_of
from chatscale.server.errors import ApiError
from chatscale.server.schemas import ID_PATTERN, RenameConversation
from chatscale.server.sse import frame
from chatscale.server.validation import read_json_object, validate
from chatscale.streams import JobNotFound

_ID = re.compile(ID_PATTERN)
_READY_PING_S = 2.0


async def list_conversations(request: Request) -> Response:
    """``GET /api/conversations[?limit=N&before=CURSOR]``: this session's conversations,
    most recently updated first, a page at a time (``next_cursor`` gives the next one)."""
    svc = services(request)
    assert svc.conversations is not None
    limit = _page_size(request.query_params.get("limit"))
    before = request.query_params.get("before")
    user = user_of(request)
    try:
        if isinstance(svc.conversations, SqlConversationStore):
            page = await svc.conversations.page(user, limit=limit, before=before)
        else:
            page = page_of_list(await svc.conversations.list(user), limit, before)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    body: dict[str, object] = {"conversations": page.conversations}
    if page.next_cursor is not None:  # only when there is a next page
        body["next_cursor"] = page.next_cursor
    return JSONResponse(body)


def _page_size(text: str | None) -> int:
    if text is None:
        return MAX_PAGE
    size = parse_whole(text)
    if size is None or not 1 <= size <= MAX_PAGE:
        raise ApiError(400, f"limit={text[:40]!r}: expected a whole number from 1 to {MAX_PAGE}")
    return size


def _conversation_id(request: Request) -> str:
    """The path's conversation id; a malformed one is simply not found."""
    conversation_id = request.path_params["conversation_id"]
    if not isinstance(conversation_id, str) or not _ID.fullmatch(conversation_id):
        raise ApiError(404, "conversation not found")
    return conversation_id


async def get_conversation(request: Request) -> Response:
    """``GET /api/conversations/{id}``: one conversation with its messages."""
    svc = services(request)
    conversation_id = _conversation_id(request)
    assert svc.conversations is not None
    found = await svc.conversations.get(user_of(request), conversation_id)
    if found is None:
        raise ApiError(404, "conversation not found")
    return JSONResponse(found)


async def rename_conversation(request: Request) -> Response:
    """``PATCH /api/conversations/{id}`` with ``{"title": ...}``: rename it."""
    svc = services(request)
    conversation_id = _conversation_id(request)
    body = validate(RenameConversation, await read_json_object(request))
    title = " ".join(body.title.split())  # one line, as derived titles are
    assert svc.conversations is not None
    user = user_of(request)
    if not await svc.conversations.rename(user, conversation_id, title):
        raise ApiError(404, "conversation not found")
    found = await svc.conversations.get(user, conversation_id)
    if found is None:  # deleted (or expired) in between
        raise ApiError(404, "conversation not found")
    found.pop("messages", None)
    return JSONResponse(found)


async def delete_conversation(request: Request) -> Response:
    """``DELETE /api/conversations/{id}``: delete it, stopping its running answers."""
    svc = services(request)
    conversation_id = _conversation_id(request)
    assert svc.conversations is not None
    user = user_of(request)
    if not await svc.conversations.delete(user, conversation_id):
        raise ApiError(404, "conversation not found")
    # Deleted first: the stopped answers then find it gone and are not stored.
    if svc.streams is not None:
        for job in await svc.streams.list_active(user):
            if job.meta.get("conversation_id") == conversation_id:
                with contextlib.suppress(JobNotFound):  # ended meanwhile
                    await svc.streams.abort(job.job_id, owner=user, wait=0)
    return Response(status_code=204)


async def session_events(request: Request) -> Response:
    """``GET /api/events``: this session's answers starting and ending, as SSE."""
    svc = services(request)
    assert svc.events is not None
    announcements = svc.events.listen(user_of(request))

    async def frames() -> AsyncIterator[bytes]:
        async for item in announcements:
            yield frame(item["kind"], item["data"])

    return _respond(svc, frames(), b"")


async def list_models(request: Request) -> Response:
    """``GET /api/models``: every model, the demo one labelled as such."""
    svc = services(request)
    assert svc.registry is not None
    models = await svc.registry.models()
    return JSONResponse(
        {
            "models": [
                {"id": m.id, "label": m.label, "provider": m.provider, "demo": m.demo}
                for m in models
            ],
            "default": svc.registry.default_model,
        }
    )


async def healthz(request: Request) -> Response:
    """``GET /healthz``: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """``GET /readyz``: not draining, started, and Redis and the database answer (when
    used)."""
    svc = services(request)
    if svc.lifecycle.draining:
        return JSONResponse({"status": "draining", "error": "draining"}, status_code=503)
    if svc.chat is None:
        return JSONResponse({"status": "starting", "error": "starting"}, status_code=503)
    if svc.redis is not None:
        try:
            async with asyncio.timeout(_READY_PING_S):
                latency = await svc.redis.ping()
        except Exception as exc:
            message = f"redis unreachable: {type(exc).__name__}"
            return JSONResponse({"status": "unavailable", "error": message}, status_code=503)
        svc.metrics.redis_latency.observe(latency)
    if svc.database is not None:
        try:
            async with asyncio.timeout(_READY_PING_S):
                await svc.database.ping()
        except Exception as exc:
            message = f"database unreachable: {type(exc).__name__}"
            return JSONResponse({"status": "unavailable", "error": message}, status_code=503)
    body: dict[str, object] = {"status": "ready", "instance": svc.instance_id}
    if svc.registry is not None and svc.registry.upstreams():
        # Detail only: the demo model still answers, so an unreachable upstream does not
        # take the instance out of the load balancer (every instance would go at once).
        body["upstreams"] = [p.state() for p in svc.registry.upstreams()]
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format."""
    svc = services(request)
    return PlainTextResponse(
        generate_latest(svc.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


routes = [
    Route("/api/conversations", list_conversations, methods=["GET"]),
    Route("/api/conversations/{conversation_id}", get_conversation, methods=["GET"]),
    Route("/api/conversations/{conversation_id}", rename_conversation, methods=["PATCH"]),
    Route("/api/conversations/{conversation_id}", delete_conversation, methods=["DELETE"]),
    Route("/api/events", session_events, methods=["GET"]),
    Route("/api/models", list_models, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
