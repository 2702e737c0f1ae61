"""Chat routes: start an answer, follow it (SSE, resumable), abort it, its status."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatscale.server.bodylimit import BodyBound
from chatscale.server.chat import Options
from chatscale.server.errors import ApiError
from chatscale.server.resume import BadToken
from chatscale.server.schemas import BLANK, ID_PATTERN, ChatRequest
from chatscale.server.services import Services
from chatscale.server.sse import (
    RETRY_MS,
    EventStream,
    LiveFrames,
    encode,
    frame,
    resume_position,
)
from chatscale.server.starting import StartRequest, begin
from chatscale.server.statuses import api_status
from chatscale.server.validation import (
    check_length,
    invalid,
    read_json_object,
    request_id_of,
    validate,
)
from chatscale.sessions import get_session
from chatscale.streams import (
    Event,
    InvalidEventId,
    JobNotFound,
    JobStatus,
    StreamManager,
    TooManyListeners,
)

_ID = re.compile(ID_PATTERN)
#: How long a stream request waits for its first event before sending the headers (so an
#: unknown stream or a bad position is a 404/400, not an empty event stream).
_PEEK_S = 0.05
#: How long it waits for the first event of a stream that has ended.
_ENDED_PEEK_S = 5.0
_MAX_BODY = 16 * 1024 * 1024
#: The longest JSON form of one character: a surrogate pair escaped, ``\ud83d\ude00``.
_MAX_BYTES_PER_CHAR = 12


def chat_body_bound(max_chars: int) -> BodyBound:
    """The largest ``POST /api/chat`` body: a message and a system prompt of ``max_chars``
    characters each, every character in its longest JSON form, plus room for the other
    fields (at most 16 MiB)."""
    return BodyBound(
        min(_MAX_BODY, 2 * max_chars * _MAX_BYTES_PER_CHAR + 4096), "MAX_MESSAGE_CHARS"
    )


def services(request: Request) -> Services:
    """The application's services."""
    found: Services = request.app.state.services
    return found


def user_of(request: Request) -> str:
    """The session's user id."""
    return get_session(request).user_id


def owner_of(request: Request, stream_id: str) -> str:
    """Who the request acts for on ``stream_id``: the resume token's owner when one is sent
    (``X-Resume-Token``, else ``?token=``), else the session's user.

    The token is what reaches a stream after the session was lost (Redis emptied); a
    token that proves nothing is a 403, not a fall-back to the session, so a client learns
    that its token is wrong instead of seeing a 404 it cannot explain.
    """
    token = request.headers.get("x-resume-token") or request.query_params.get("token")
    if not token:
        return user_of(request)
    tokens = services(request).tokens
    if tokens is None:
        raise ApiError(503, "starting up", {"Retry-After": "1"})
    try:
        return tokens.verify(token, stream_id)
    except BadToken as exc:
        raise ApiError(403, str(exc)) from None


def _with_token(svc: Services, started: dict[str, Any], owner: str) -> dict[str, Any]:
    if svc.tokens is None:
        return started
    return {**started, "resume_token": svc.tokens.issue(started["stream_id"], owner)}


def stream_id_of(request: Request) -> str:
    """The path's stream id; a malformed one is simply not found."""
    stream_id = request.path_params["stream_id"]
    if not isinstance(stream_id, str) or not _ID.fullmatch(stream_id):
        raise ApiError(404, "stream not found")
    return stream_id


def manager_of(svc: Services) -> StreamManager:
    """The stream manager (503 while starting)."""
    if svc.streams is None:
        raise ApiError(503, "starting up", {"Retry-After": "1"})
    return svc.streams


async def read_chat_request(request: Request, max_chars: int) -> ChatRequest:
    """Parse and validate the body of ``POST /api/chat`` (4xx with a reason otherwise)."""
    payload = await read_json_object(request)
    message = payload.get("message")
    check_length("message", message if isinstance(message, str) else None, max_chars)
    system = payload.get("system")
    check_length("system", system if isinstance(system, str) else None, max_chars)
    if isinstance(message, str) and not message.strip(BLANK):
        # Also in the schema (NOT_BLANK_PATTERN); checked first for a clearer message.
        raise invalid(["body", "message"], "must not be blank")
    body = validate(ChatRequest, payload)
    # The rules between fields (the schema's if/then/else).
    if body.regenerate:
        if body.message is not None:
            raise invalid(
                ["body", "message"],
                "must be absent with regenerate (the last user message is answered again)",
            )
        if body.conversation_id is None:
            raise invalid(["body", "conversation_id"], "required with regenerate")
    elif body.message is None:
        raise invalid(["body", "message"], "Field required")
    return body


async def start_chat(request: Request) -> Response:
    """``POST /api/chat``: start an answer, or regenerate the last one (idempotent with
    ``client_request_id``)."""
    svc = services(request)
    body = await read_chat_request(request, svc.settings.max_message_chars)
    start = StartRequest(
        message=body.message or "",
        conversation_id=body.conversation_id,
        model=body.model,
        options=Options(body.system, body.temperature, body.max_tokens),
        request_id=request_id_of(request, body.client_request_id),
        regenerate=body.regenerate,
    )
    user = user_of(request)
    started = await begin(svc, request, user, start)
    return JSONResponse({**_with_token(svc, started, user), "status": "started"}, status_code=202)


async def _frames(rest: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    try:
        async for event in rest:
            chunk = encode(event)
            # Not kept while the frame waits for a slow client (a final event can hold a
            # whole answer's text).
            del event
            yield chunk
    finally:
        with contextlib.suppress(Exception):
            await rest.aclose()  # type: ignore[attr-defined]


async def follow_stream(request: Request) -> Response:
    """``GET /api/chat/stream/{id}``: the events after the resume position, then live;
    ``204`` when the answer has ended and nothing comes after the position (so that an
    EventSource stops reconnecting)."""
    svc = services(request)
    stream_id = stream_id_of(request)
    after = resume_position(request)
    if after is not None:
        svc.metrics.sse_resumes.inc()
    owner = owner_of(request, stream_id)
    manager = manager_of(svc)
    if svc.sse.closing:
        return _respond(svc, _empty_frames(), b"")  # draining: "reconnect" at once
    # Once caught up, the backend writes each event to the socket as it is stored (in
    # memory; Redis yields them all), instead of waking this stream's pump per event.
    live = LiveFrames()
    events = manager.subscribe(stream_id, after=after, owner=owner, sink=live.sink(encode))
    # Peek at the first event so that errors of the subscription are HTTP errors.
    peek: asyncio.Task[Event] = asyncio.ensure_future(anext(events))
    done, _ = await asyncio.wait({peek}, timeout=_PEEK_S)
    if not done and await _has_ended(manager, stream_id, owner):
        # An ended stream's log is read at once, but a loaded backend can take longer than
        # the peek: its answer (events or 204) is worth waiting for.
        done, _ = await asyncio.wait({peek}, timeout=_ENDED_PEEK_S)
    first: bytes = b""
    ended = False
    if done:
        try:
            event = peek.result()
        except JobNotFound:
            raise ApiError(404, "stream not found") from None
        except InvalidEventId as exc:
            raise ApiError(400, f"bad event id: {exc.problem}") from None
        except TooManyListeners as exc:
            raise ApiError(429, str(exc), {"Retry-After": "5"}) from None
        except StopAsyncIteration:
            # The answer ended and the client has all of it: no stream to open.
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            return Response(status_code=204)
        first = encode(event)
        ended = event.final
        frames = _frames(events) if not ended else _empty(events)
    else:
        frames = _after_peek(peek, events)
    return _respond(svc, frames, first, live)


async def _has_ended(manager: StreamManager, stream_id: str, owner: str) -> bool:
    try:
        info = await manager.status(stream_id, owner=owner)
    except Exception:  # the subscription reports what is wrong (or streams what it can)
        return False
    return info is not None and info.status is not JobStatus.RUNNING


def _respond(
    svc: Services, frames: AsyncIterator[bytes], first: bytes, live: LiveFrames | None = None
) -> Response:
    stream = EventStream(
        frames,
        svc.sse,
        first=first,
        stall_timeout_s=float(svc.settings.sse_stall_timeout),
        live=live,
    )
    return sse_response(svc, stream)


def sse_response(svc: Services, stream: EventStream) -> Response:
    """``stream`` as the route's response, counted in the open event streams metric."""
    return _CountedStream(svc, stream)


class _CountedStream(Response):
    """An event stream counted in the open event streams metric while it runs.

    A class of its own, not one made per response: a class is a reference cycle, and one
    per stream held each stream's objects for the garbage collector."""

    def __init__(self, svc: Services, stream: EventStream) -> None:
        super().__init__()
        self.svc = svc
        self.stream = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        metrics = self.svc.metrics
        metrics.open_sse += 1
        try:
            await self.stream(scope, receive, send)
        finally:
            metrics.open_sse -= 1


async def _empty_frames() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _empty(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    with contextlib.suppress(Exception):
        await events.aclose()  # type: ignore[attr-defined]
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _after_peek(
    peek: asyncio.Task[Event], events: AsyncIterator[Event]
) -> AsyncIterator[bytes]:
    try:
        try:
            event = await peek
        except StopAsyncIteration:
            return
        except (JobNotFound, InvalidEventId):
            # The status line is already sent (the first event was slow to come) and the
            # job vanished meanwhile (expiry, Redis lost it): not an event of the log, so no
            # id-less "error" event; the client reconnects and gets the definitive answer
            # (404 or 400 with a JSON body) before any stream starts.
            yield frame("reconnect", {}, retry=RETRY_MS)
            return
        chunk, final = encode(event), event.final
        del event  # see _frames
        yield chunk
        if final:
            return
        async for event in events:
            chunk = encode(event)
            del event
            yield chunk
    finally:
        if not peek.done():
            peek.cancel()
        with contextlib.suppress(BaseException):
            await events.aclose()  # type: ignore[attr-defined]


async def abort_stream(request: Request) -> Response:
    """``POST /api/chat/stream/{id}/abort``: stop an answer from any instance."""
    svc = services(request)
    stream_id = stream_id_of(request)
    owner = owner_of(request, stream_id)
    manager = manager_of(svc)
    try:
        acknowledged = await manager.abort(stream_id, owner=owner, wait=3.0)
    except JobNotFound:
        raise ApiError(404, "stream not found") from None
    info = await manager.status(stream_id, owner=owner)
    # Not acknowledged: either the answer had ended already (then it says how), or the
    # stop is still on its way (the stream still runs, and ends "aborted").
    status = api_status(info.status) if info is not None else "aborted"
    if acknowledged:
        status = "aborted"
    return JSONResponse(
        {
            "aborted": status in ("aborted", "running"),
            "acknowledged": acknowledged,
            "status": status,
        }
    )


async def stream_status(request: Request) -> Response:
    """``GET /api/chat/stream/{id}/status``: status and the text so far."""
    svc = services(request)
    stream_id = stream_id_of(request)
    info = await manager_of(svc).status(stream_id, owner=owner_of(request, stream_id))
    if info is None:
        raise ApiError(404, "stream not found")
    return JSONResponse(
        {
            "stream_id": info.job_id,
            "conversation_id": info.meta.get("conversation_id"),
            "status": api_status(info.status),
            "text": info.text,
            "last_event_id": info.last_event_id,
            "created_at": info.created_at,
            "updated_at": info.updated_at,
        }
    )


async def active_streams(request: Request) -> Response:
    """``GET /api/chat/active``: this session's running answers."""
    svc = services(request)
    user = user_of(request)
    jobs = await manager_of(svc).list_active(user)
    return JSONResponse(
        {
            "streams": [
                _with_token(
                    svc,
                    {
                        "stream_id": job.job_id,
                        "conversation_id": job.meta.get("conversation_id"),
                        "status": api_status(job.status),
                        "created_at": job.created_at,
                    },
                    user,
                )
                for job in jobs
            ]
        }
    )


routes = [
    Route("/api/chat", start_chat, methods=["POST"]),
    Route("/api/chat/active", active_streams, methods=["GET"]),
    Route("/api/chat/stream/{stream_id}", follow_stream, methods=["GET"]),
    Route("/api/chat/stream/{stream_id}/abort", abort_stream, methods=["POST"]),
    Route("/api/chat/stream/{stream_id}/status", stream_status, methods=["GET"]),
]
