"""Routes for Vercel AI SDK clients (``useChat`` with ``DefaultChatTransport``).

``POST /api/ai-sdk/chat`` starts an answer and streams it in the UI message stream protocol
(:mod:`chatscale.server.ai_sdk`); ``GET /api/ai-sdk/chat/{chatId}/stream`` resumes the
chat's running answer (from its start, as the AI SDK expects), or answers 204 when none
runs. Both run on the same streams engine as ``/api/chat``: limits, idempotency, takeover
and storage are the same, and a resume works on any instance.

The chat id is the conversation id, created on first use (the AI SDK makes chat ids on the
client). The model sees the conversation the server stored, plus the new user message: the
history the client sends is not trusted (it could put words in the assistant's mouth).
``trigger: "regenerate-message"`` (``regenerate()``) is ``POST /api/chat`` with
``regenerate``: the stored last answer is replaced by a new answer to the last user message.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatscale.server import ai_sdk
from chatscale.server.api_chat import manager_of, services, sse_response, user_of
from chatscale.server.bodylimit import BodyBound
from chatscale.server.chat import Options, conversation_jobs
from chatscale.server.errors import ApiError
from chatscale.server.schemas import BLANK, ID_PATTERN, REQUEST_ID_PATTERN, AiSdkChatRequest
from chatscale.server.services import Services
from chatscale.server.sse import EventStream
from chatscale.server.starting import StartRequest, begin
from chatscale.server.validation import check_length, invalid, read_json_object, validate
from chatscale.streams import JobNotFound, StreamManager, TooManyListeners

_ID = re.compile(ID_PATTERN)
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
#: The AI SDK sends the whole conversation with every message: its body is bounded by a
#: fixed size rather than by MAX_MESSAGE_CHARS (each message is still held to that).
MAX_BODY_BYTES = 16 * 1024 * 1024
BODY_BOUND = BodyBound(MAX_BODY_BYTES, "the AI SDK route's fixed 16 MiB")
PATH = "/api/ai-sdk/chat"


async def chat(request: Request) -> Response:
    """``POST /api/ai-sdk/chat``: start an answer to the last (user) message and stream it."""
    svc = services(request)
    body, text = _read(await read_json_object(request), svc.settings.max_message_chars)
    regenerate = body.trigger == "regenerate-message"
    if regenerate:
        # A retried POST of the same regeneration names the same answer to replace.
        request_id = f"ai-sdk-regen:{body.messageId}" if body.messageId else None
    else:
        # A retried POST of the same message (same UIMessage id) is the same request.
        request_id = f"ai-sdk:{body.messages[-1].id}"
    user = user_of(request)
    started = await begin(
        svc,
        request,
        user,
        StartRequest(
            message="" if regenerate else text,
            conversation_id=body.id,
            model=body.model,
            options=Options(body.system, body.temperature, body.max_tokens),
            request_id=request_id if request_id and _REQUEST_ID.fullmatch(request_id) else None,
            # A regeneration answers a stored conversation: an unknown chat is a 404.
            create=not regenerate,
            regenerate=regenerate,
        ),
    )
    return _respond(svc, manager_of(svc), started["stream_id"], user)


def _read(payload: dict[str, object], max_chars: int) -> tuple[AiSdkChatRequest, str]:
    """The valid request and the text of its last message (4xx naming what is wrong)."""
    system = payload.get("system")
    check_length("system", system if isinstance(system, str) else None, max_chars)
    body = validate(AiSdkChatRequest, payload)
    # Also for a regeneration: the AI SDK sends the messages up to the user message whose
    # answer is replaced (the stored conversation is what the model sees, as for a submit).
    last = body.messages[-1]
    where: list[str | int] = ["body", "messages", len(body.messages) - 1]
    if last.role != "user":
        raise invalid([*where, "role"], "the last message must be the user's")
    text = "".join(p.text or "" for p in last.parts if p.type == "text")
    if not text.strip(BLANK):
        raise invalid([*where, "parts"], "the last message has no text (text parts)")
    check_length("message", text, max_chars)
    return body, text


async def resume(request: Request) -> Response:
    """``GET /api/ai-sdk/chat/{chatId}/stream``: the chat's running answer, replayed from its
    start; 204 when nothing runs (an answer that has just ended is waited for until it is
    recorded, as the chat's stored messages then hold it)."""
    svc = services(request)
    chat_id = request.path_params["chat_id"]
    if not isinstance(chat_id, str) or not _ID.fullmatch(chat_id):
        raise ApiError(404, "chat not found")
    user = user_of(request)
    manager = manager_of(svc)
    running = await conversation_jobs(manager, user, chat_id)
    if not running:
        return Response(status_code=204)
    latest = max(running, key=lambda job: job.created_at)
    return _respond(svc, manager, latest.job_id, user)


def _respond(svc: Services, manager: StreamManager, stream_id: str, user: str) -> Response:
    stream = EventStream(
        _parts(manager, stream_id, user),
        svc.sse,
        first=ai_sdk.start(stream_id),
        stall_timeout_s=float(svc.settings.sse_stall_timeout),
        headers=ai_sdk.HEADERS,
        reconnect_frame=ai_sdk.INTERRUPTED,
    )
    return sse_response(svc, stream)


async def _parts(manager: StreamManager, stream_id: str, user: str) -> AsyncIterator[bytes]:
    """The answer's parts from its first event (a resume is a replay, as the AI SDK
    expects), then live, until its final event."""
    writer = ai_sdk.UiMessageWriter()
    events = manager.subscribe(stream_id, after=None, owner=user)
    try:
        async for event in events:
            chunk, final = writer.write(event), event.final
            del event  # not kept while a slow client reads the frame
            if chunk:
                yield chunk
            if final:
                return
    except JobNotFound:
        yield writer.error("the answer is no longer available (expired, or its data was lost)")
    except TooManyListeners as exc:
        yield writer.error(str(exc))
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]


routes = [
    Route(PATH, chat, methods=["POST"]),
    Route(PATH + "/{chat_id}/stream", resume, methods=["GET"]),
]
