"""The OpenAPI 3.1 document of the API, built from the pydantic models.

``tests/server/test_openapi.py`` holds it to the routes: every route and method is here, and
every status a handler can answer (found by reading its code) is documented; schemathesis
runs it against a live server in CI (``tests/server/test_schemathesis.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chatscale import __version__
from chatscale.paging import CURSOR_PATTERN, MAX_PAGE
from chatscale.server import schemas
from chatscale.server.openapi_durable import chat_view_paths
from chatscale.server.openapi_protocol import protocol_paths, security_schemes
from chatscale.server.sse import EVENT_ID_PATTERN

_MODELS: list[type[BaseModel]] = [
    schemas.ChatRequest,
    schemas.AiSdkChatRequest,
    schemas.ChatStarted,
    schemas.AbortResult,
    schemas.StreamStatus,
    schemas.ActiveStreams,
    schemas.ConversationList,
    schemas.Conversation,
    schemas.RenameConversation,
    schemas.ModelList,
    schemas.ErrorBody,
]

_SSE_DESCRIPTION = (
    "Server-Sent Events. Every event has an `id:`; send it back as `Last-Event-ID` (or "
    "`?after=`) to resume exactly after it. Events: `delta` {text}, status/tool events, and "
    "one final event: `done` {finish_reason}, `aborted` {} or `error` {message} (the answer "
    "is what the deltas add up to). `reconnect` asks the client to reconnect (the instance "
    "is draining). Comment lines are heartbeats."
)


_UI_STREAM_DESCRIPTION = (
    "The Vercel AI SDK's UI message stream (v1, header `x-vercel-ai-ui-message-stream: v1`): "
    "SSE `data:` lines of JSON parts: `start` {messageId: the stream id}, `text-start`, "
    "`text-delta` {id, delta}, `text-end`, then `finish` {finishReason}, `abort` or `error` "
    "{errorText}, and `data: [DONE]`. A stream cut by a drain ends with an `error` part: "
    "resume it."
)


#: The 403 of the routes that start an answer (the ban of repeated limit violations).
_BANNED = (
    "Temporarily banned after too many limit violations (BAN_VIOLATION_LIMIT, BAN_DURATION); "
    "see Retry-After"
)


#: One event of the chat API's event streams, as a client parses it (OpenAPI 3.1: an
#: event stream's ``schema`` describes each event). Heartbeats are comments, and the
#: ``retry`` field first comes without data: neither is an event.
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "`message` when the frame names none"},
        "data": {"type": "string"},
        "id": {"type": "string", "pattern": EVENT_ID_PATTERN},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["event", "data"],
}


def _ui_stream(description: str) -> dict[str, Any]:
    return {
        "description": f"{description}. {_UI_STREAM_DESCRIPTION}",
        "headers": {"x-vercel-ai-ui-message-stream": {"schema": {"type": "string", "const": "v1"}}},
        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
    }


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_ERROR_TEXT = {
    400: "Bad input",
    403: "A resume token that is malformed, forged, expired or for another stream",
    404: "Unknown (or another session's) stream or conversation",
    409: "The idempotency key (client_request_id or Idempotency-Key) was used for another "
    "request; or a request with it is still starting: retry after Retry-After",
    413: "Message too long (MAX_MESSAGE_CHARS)",
    415: "Not JSON",
    422: "Invalid fields: `fields` names each (`loc`, `msg`)",
    429: "Rate or concurrency limit; see Retry-After",
    503: "Draining, starting, or Redis or the database unavailable; see Retry-After",
}


def _errors(*codes: int, **texts: str) -> dict[str, Any]:
    """Error responses; ``texts`` overrides a description (``e403="..."``)."""
    return {str(c): _json(schemas.ErrorBody, texts.get(f"e{c}", _ERROR_TEXT[c])) for c in codes}


#: What every ``/api/`` route can answer before its handler runs: the session middleware
#: (several session cookies; a new session refused by SESSION_CREATE_LIMIT, or to a banned
#: address).
_SESSION_ANSWERS = {
    400: "Several session cookies in one request",
    403: "This address is banned after repeated violations; see Retry-After",
    429: "Too many new sessions from this address (SESSION_CREATE_LIMIT); see Retry-After",
}
#: What every unsafe method can answer: the Origin check (sessions/csrf.py).
_CROSS_SITE = "A cross-site request (Origin or Sec-Fetch-Site not allowed: ALLOWED_ORIGINS)"
_UNSAFE = frozenset({"post", "put", "patch", "delete"})


def _add_middleware_answers(paths: dict[str, Any]) -> None:
    """Document the middleware's answers on every operation they apply to (merged into a
    route's own description of the same status)."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            extra: dict[int, str] = dict(_SESSION_ANSWERS) if path.startswith("/api/") else {}
            if method in _UNSAFE:
                extra[403] = f"{extra[403]}; or: {_CROSS_SITE}" if 403 in extra else _CROSS_SITE
            responses = operation["responses"]
            for code, text in extra.items():
                known = responses.get(str(code))
                if known is None:
                    responses[str(code)] = _json(schemas.ErrorBody, text)
                elif text not in known["description"]:
                    known["description"] = f"{known['description']}; or: {text}"


def _links_from_start(durable_streams: bool) -> dict[str, Any]:
    # Lets clients (and schemathesis's stateful phase) follow a started answer.
    stream = {"stream_id": "$response.body#/stream_id", "token": "$response.body#/resume_token"}
    durable = {"ReadStreamDurable": {"operationId": "readStreamDurable", "parameters": stream}}
    return {
        **(durable if durable_streams else {}),
        "FollowStream": {"operationId": "followStream", "parameters": stream},
        "StreamStatus": {"operationId": "streamStatus", "parameters": stream},
        "AbortStream": {"operationId": "abortStream", "parameters": stream},
        "GetConversation": {
            "operationId": "getConversation",
            "parameters": {"conversation_id": "$response.body#/conversation_id"},
        },
    }


def _stream_param() -> dict[str, Any]:
    return {
        "name": "stream_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": schemas.ID_PATTERN},
    }


def _token_params() -> list[dict[str, Any]]:
    description = (
        "The resume_token of POST /api/chat: proves ownership when the session does not "
        "(e.g. it was lost with Redis's data); the header wins over the query"
    )
    return [
        {"name": "token", "in": "query", "schema": {"type": "string"}, "description": description},
        {
            "name": "X-Resume-Token",
            "in": "header",
            "schema": {"type": "string"},
            "description": description,
        },
    ]


def _idempotency_header() -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "schema": {"type": "string", "pattern": schemas.REQUEST_ID_PATTERN},
        "description": "The same as `client_request_id` (both present must be equal)",
    }


def build_openapi(
    durable_streams: bool = False,
    *,
    durable_streams_path: str = "/v1/stream",
    durable_streams_open: bool = False,
) -> dict[str, Any]:
    """The whole document; with ``durable_streams`` (``DURABLE_STREAMS``) also the
    protocol's routes under ``durable_streams_path`` (``DURABLE_STREAMS_PATH``; without a
    token requirement when ``durable_streams_open``: ``DURABLE_STREAMS_AUTH=none``) and the
    chat answers read as Durable Streams, which the server then serves."""
    _, definitions = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    stream = [_stream_param(), *_token_params()]
    conversation = {
        "name": "conversation_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": schemas.ID_PATTERN},
    }
    event_id = {"type": "string", "pattern": EVENT_ID_PATTERN}
    resume_description = "Resume after this event id (empty or 0: from the start)"
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "operationId": "page",
                "summary": "The chat page",
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/api/chat": {
            "post": {
                "operationId": "startChat",
                "summary": "Start an answer, or regenerate the last one (idempotent with "
                "client_request_id)",
                "parameters": [_idempotency_header()],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(schemas.ChatRequest)}},
                },
                "responses": {
                    "202": {
                        **_json(schemas.ChatStarted, "Started (or the earlier start)"),
                        "links": _links_from_start(durable_streams),
                    },
                    **_errors(
                        400,
                        403,
                        404,
                        409,
                        413,
                        415,
                        422,
                        429,
                        503,
                        e400="Bad input, or an unknown model",
                        e404="Unknown (or another session's) conversation_id",
                        e409="The idempotency key was used for another request, or a request "
                        "with it is still starting (retry after Retry-After); or, with "
                        "`regenerate`, an answer is running in the conversation (or it has no "
                        "message to answer)",
                        e403=_BANNED,
                    ),
                },
            }
        },
        "/api/ai-sdk/chat": {
            "post": {
                "operationId": "aiSdkChat",
                "summary": "Vercel AI SDK (`useChat`): start an answer to the last message and "
                "stream it",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(schemas.AiSdkChatRequest)}},
                },
                "responses": {
                    "200": _ui_stream("The answer, from its start"),
                    **_errors(
                        400,
                        403,
                        404,
                        409,
                        413,
                        415,
                        422,
                        429,
                        503,
                        e400="Bad input, or an unknown model",
                        e403=_BANNED,
                        e404="A regeneration (`regenerate-message`) in a chat never stored (other "
                        "chats are created on first use)",
                        e409="The same message (UIMessage id) is still starting; retry after "
                        "Retry-After; or its id was used for another request; or, to "
                        "regenerate, an answer is running in the chat",
                    ),
                },
            }
        },
        "/api/ai-sdk/chat/{chat_id}/stream": {
            "get": {
                "operationId": "aiSdkResume",
                "summary": "Vercel AI SDK (`useChat` with `resume: true`): the chat's running "
                "answer, replayed from its start",
                "parameters": [
                    {
                        "name": "chat_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": schemas.ID_PATTERN},
                    }
                ],
                "responses": {
                    "200": _ui_stream("The running answer, from its start"),
                    "204": {"description": "No answer of this chat runs: nothing to resume"},
                    **_errors(404, 503, e404="A malformed chat id"),
                },
            }
        },
        "/api/chat/stream/{stream_id}": {
            "get": {
                "operationId": "followStream",
                "summary": "Follow an answer as Server-Sent Events, resumable",
                "parameters": [
                    *stream,
                    {
                        "name": "after",
                        "in": "query",
                        "schema": event_id,
                        "description": resume_description,
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "schema": event_id,
                        "description": resume_description + "; wins over `after`",
                    },
                ],
                "responses": {
                    "200": {
                        "description": _SSE_DESCRIPTION,
                        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                    },
                    "204": {
                        "description": "The answer has ended and nothing follows the resume "
                        "position: nothing to stream (EventSource stops reconnecting)"
                    },
                    **_errors(
                        400,
                        403,
                        404,
                        429,
                        503,
                        e429="Too many listeners on this stream (REDIS_MAX_LISTENERS); "
                        "see Retry-After",
                    ),
                },
            }
        },
        "/api/chat/stream/{stream_id}/abort": {
            "post": {
                "operationId": "abortStream",
                "summary": "Stop an answer, from any instance",
                "parameters": stream,
                "responses": {
                    "200": _json(schemas.AbortResult, "Stopped"),
                    **_errors(403, 404, 503),
                },
            }
        },
        "/api/chat/stream/{stream_id}/status": {
            "get": {
                "operationId": "streamStatus",
                "summary": "Status and text so far",
                "parameters": stream,
                "responses": {
                    "200": _json(schemas.StreamStatus, "Status"),
                    **_errors(403, 404, 503),
                },
            }
        },
        "/api/chat/active": {
            "get": {
                "operationId": "activeStreams",
                "summary": "This session's running answers",
                "responses": {
                    "200": _json(schemas.ActiveStreams, "Running streams"),
                    **_errors(503),
                },
            }
        },
        "/api/events": {
            "get": {
                "operationId": "sessionEvents",
                "summary": "SSE feed of this session's answers starting (`started`) and ending"
                " (`ended`)",
                "responses": {
                    "200": {
                        "description": "Server-Sent Events",
                        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                    },
                    **_errors(503),
                },
            }
        },
        "/api/conversations": {
            "get": {
                "operationId": "listConversations",
                "summary": "This session's conversations, most recently updated first, by page",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "Page size (default and most: 1000)",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "required": False,
                        "description": "`next_cursor` of the previous page",
                        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                    },
                ],
                "responses": {
                    "200": _json(schemas.ConversationList, "Conversations"),
                    **_errors(400, 503),
                },
            }
        },
        "/api/conversations/{conversation_id}": {
            "get": {
                "operationId": "getConversation",
                "summary": "One conversation and its messages",
                "parameters": [conversation],
                "responses": {
                    "200": _json(schemas.Conversation, "Conversation"),
                    **_errors(404, 503),
                },
            },
            "patch": {
                "operationId": "renameConversation",
                "summary": "Rename a conversation (its place in the list does not change)",
                "parameters": [conversation],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(schemas.RenameConversation)}},
                },
                "responses": {
                    "200": _json(schemas.ConversationSummary, "Renamed: the conversation"),
                    **_errors(
                        400, 404, 413, 415, 422, 503, e413="Body too large (MAX_REQUEST_BODY_BYTES)"
                    ),
                },
            },
            "delete": {
                "operationId": "deleteConversation",
                "summary": "Delete a conversation and its messages; its running answers stop",
                "parameters": [conversation],
                "responses": {
                    "204": {"description": "Deleted"},
                    **_errors(404, 503),
                },
            },
        },
        "/api/models": {
            "get": {
                "operationId": "listModels",
                "summary": "Models (the demo model is labelled as such)",
                "responses": {"200": _json(schemas.ModelList, "Models"), **_errors(503)},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Process up",
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Ready: Redis reachable (when used) and not draining",
                "responses": {"200": {"description": "ready"}, **_errors(503)},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    components: dict[str, Any] = {"schemas": definitions["$defs"]}
    if durable_streams:
        paths.update(chat_view_paths(stream))
        paths.update(protocol_paths(durable_streams_path, open_=durable_streams_open))
        components["securitySchemes"] = security_schemes()
    _add_middleware_answers(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "chatscale", "version": __version__},
        "paths": paths,
        "components": components,
    }
