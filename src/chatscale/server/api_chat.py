"""Chat routes: start an answer, follow it (SSE, resumable), abort it, its status."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatscale.llm import ProviderError
from chatscale.ratelimit import ConcurrencyLimitExceeded, Lease, RateLimits
from chatscale.server.bodylimit import BodyBound
from chatscale.server.errors import ApiError
from chatscale.server.idempotency import StillStarting
from chatscale.server.resume import BadToken
from chatscale.server.schemas import BLANK, ID_PATTERN, ChatRequest
from chatscale.server.services import Services
from chatscale.server.sse import RETRY_MS, EventStream, encode, frame, resume_position
from chatscale.sessions import get_session
from chatscale.streams import (
    Event,
    InvalidEventId,
    JobNotFound,
    ManagerClosed,
    StreamManager,
    TooManyListeners,
)

_ID = re.compile(ID_PATTERN)
#: How long a stream request waits for its first event before sending the headers (so an
#: unknown stream or a bad position is a 404/400, not an empty event stream).
_PEEK_S = 0.05
_MAX_BODY = 16 * 1024 * 1024
#: The longest JSON form of one character: a surrogate pair escaped, ``\ud83d\ude00``.
_MAX_BYTES_PER_CHAR = 12


def chat_body_bound(max_chars: int) -> BodyBound:
    """The largest ``POST /api/chat`` body: a message of ``max_chars`` characters, each in
    its longest JSON form, plus room for the other fields (at most 16 MiB)."""
    return BodyBound(min(_MAX_BODY, max_chars * _MAX_BYTES_PER_CHAR + 4096), "MAX_MESSAGE_CHARS")


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
    if not isinstance(stream_id, str) or not _ID.match(stream_id):
        raise ApiError(404, "stream not found")
    return stream_id


def _manager(svc: Services) -> StreamManager:
    if svc.streams is None:
        raise ApiError(503, "starting up", {"Retry-After": "1"})
    return svc.streams


async def read_chat_request(request: Request, max_chars: int) -> ChatRequest:
    """Parse and validate the body of ``POST /api/chat`` (4xx with a reason otherwise)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "expected a JSON body (Content-Type: application/json)")
    raw = await request.body()  # bounded by chat_body_bound (BodyLimitMiddleware)
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed JSON body") from None
    except RecursionError:
        # json's C scanner stops at the interpreter's recursion limit: a 400, not a 500.
        raise ApiError(400, "malformed JSON body: nested too deeply") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object")
    message = payload.get("message")
    if isinstance(message, str) and len(message) > max_chars:
        raise ApiError(
            413,
            f"message too long: {len(message)} characters, at most {max_chars} (MAX_MESSAGE_CHARS)",
        )
    if isinstance(message, str) and not message.strip(BLANK):
        # Also in the schema (NOT_BLANK_PATTERN); checked first for a clearer message.
        raise ApiError(422, "message: must not be blank")
    try:
        body = ChatRequest.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(422, _describe(exc)) from None
    return body


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


async def start_chat(request: Request) -> Response:
    """``POST /api/chat``: start an answer (idempotent with ``client_request_id``)."""
    svc = services(request)
    if svc.lifecycle.draining:
        svc.metrics.rejected.labels("draining").inc()
        raise ApiError(503, "this instance is shutting down; retry", {"Retry-After": "1"})
    body = await read_chat_request(request, svc.settings.max_message_chars)
    user = user_of(request)
    assert svc.chat is not None and svc.idempotency is not None
    request_id = body.client_request_id
    if request_id is not None:
        try:
            earlier = await svc.idempotency.claim(user, request_id)
        except StillStarting:
            raise ApiError(
                409, "a request with this client_request_id is still starting", {"Retry-After": "1"}
            ) from None
        if earlier is not None:
            return JSONResponse(
                {**_with_token(svc, earlier, user), "status": "started"}, status_code=202
            )
    lease = None
    try:
        lease = await _admit(svc, request)
        release = None
        if lease is not None and svc.limits is not None:
            release = _releaser(svc.limits, lease)
        conversation_id = body.conversation_id
        key = None
        if request_id is not None:
            key = _request_key(user, request_id, body.message)
            # A retry must land in the conversation its failed attempt may have created.
            conversation_id = conversation_id or key[:32]
        try:
            started = await svc.chat.start(
                user,
                body.message,
                conversation_id=conversation_id,
                model=body.model,
                client_request_id=request_id,
                request_key=key,
                limit_identity=lease.user if lease is not None else None,
                on_end=release,
            )
        except ProviderError as exc:
            raise ApiError(400, str(exc)) from None
        except ManagerClosed:
            raise ApiError(
                503, "this instance is shutting down; retry", {"Retry-After": "1"}
            ) from None
        lease = None  # released by the generation's end now
    except BaseException:
        if request_id is not None:
            with contextlib.suppress(Exception):
                await svc.idempotency.release(user, request_id)
        if lease is not None and svc.limits is not None:
            with contextlib.suppress(Exception):
                await svc.limits.concurrency.release(lease)
        raise
    if request_id is not None:
        await svc.idempotency.finish(user, request_id, started.as_json())
    svc.metrics.chats.inc()
    return JSONResponse(
        {**_with_token(svc, started.as_json(), user), "status": "started"}, status_code=202
    )


def _request_key(user: str, request_id: str, message: str) -> str:
    """What names one sent message: its ``client_request_id`` (and what it says, so that an
    id a client reuses for another message, after the idempotency hour, is another one)."""
    return hashlib.sha256(f"{user}\n{request_id}\n{message}".encode()).hexdigest()


async def _admit(svc: Services, request: Request) -> Lease | None:
    """Apply CHAT_RATE_LIMIT (with bans) and take a CHAT_CONCURRENCY_LIMIT slot."""
    limits = svc.limits
    if limits is None:
        return None
    refusal = await limits.chat.check(request.scope)
    if refusal is not None:
        svc.metrics.rejected.labels("rate_limit").inc()
        raise ApiError(refusal.status, refusal.error, {"Retry-After": str(refusal.retry_after)})
    identity = limits.identity(request.scope)
    try:
        return await limits.concurrency.acquire(identity)
    except ConcurrencyLimitExceeded as exc:
        svc.metrics.rejected.labels("concurrency").inc()
        await limits.bans.violation(identity)
        raise ApiError(
            429,
            f"too many answers running at once ({exc.limit}, CHAT_CONCURRENCY_LIMIT)",
            {"Retry-After": str(exc.retry_after)},
        ) from None


def _releaser(limits: RateLimits, lease: Lease) -> Callable[[], Awaitable[None]]:
    async def release() -> None:
        await limits.concurrency.release(lease)

    return release


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
    """``GET /api/chat/stream/{id}``: the events after the resume position, then live."""
    svc = services(request)
    stream_id = stream_id_of(request)
    after = resume_position(request)
    if after is not None:
        svc.metrics.sse_resumes.inc()
    owner = owner_of(request, stream_id)
    manager = _manager(svc)
    if svc.sse.closing:
        return _respond(svc, _empty_frames(), b"")  # draining: "reconnect" at once
    events = manager.subscribe(stream_id, after=after, owner=owner)
    # Peek at the first event so that errors of the subscription are HTTP errors.
    peek: asyncio.Task[Event] = asyncio.ensure_future(anext(events))
    done, _ = await asyncio.wait({peek}, timeout=_PEEK_S)
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
            event = None
            ended = True
        if event is not None:
            first = encode(event)
            ended = event.final
        frames = _frames(events) if not ended else _empty(events)
    else:
        frames = _after_peek(peek, events)
    return _respond(svc, frames, first)


def _respond(svc: Services, frames: AsyncIterator[bytes], first: bytes) -> Response:
    stream = EventStream(
        frames, svc.sse, first=first, stall_timeout_s=float(svc.settings.sse_stall_timeout)
    )

    class _Asgi(Response):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            svc.metrics.open_sse += 1
            try:
                await stream(scope, receive, send)
            finally:
                svc.metrics.open_sse -= 1

    return _Asgi()


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
    try:
        acknowledged = await _manager(svc).abort(
            stream_id, owner=owner_of(request, stream_id), wait=3.0
        )
    except JobNotFound:
        raise ApiError(404, "stream not found") from None
    return JSONResponse({"aborted": True, "acknowledged": acknowledged})


async def stream_status(request: Request) -> Response:
    """``GET /api/chat/stream/{id}/status``: status and the text so far."""
    svc = services(request)
    stream_id = stream_id_of(request)
    info = await _manager(svc).status(stream_id, owner=owner_of(request, stream_id))
    if info is None:
        raise ApiError(404, "stream not found")
    return JSONResponse(
        {
            "stream_id": info.job_id,
            "conversation_id": info.meta.get("conversation_id"),
            "status": info.status.value,
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
    jobs = await _manager(svc).list_active(user)
    return JSONResponse(
        {
            "streams": [
                _with_token(
                    svc,
                    {
                        "stream_id": job.job_id,
                        "conversation_id": job.meta.get("conversation_id"),
                        "status": job.status.value,
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
