"""Request and response bodies of the HTTP API (also the source of ``/openapi.json``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
#: What a message counts as blank with: only these characters (the same in every regex
#: dialect, unlike ``\s``).
BLANK = " \t\n\r\f\v"
#: A message that is not blank: one character outside :data:`BLANK`.
NOT_BLANK_PATTERN = r"[^ \t\n\r\f\v]"


class ChatRequest(BaseModel):
    """``POST /api/chat``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    message: StrictStr = Field(
        min_length=1, pattern=NOT_BLANK_PATTERN, description="The user's message (not blank)"
    )
    conversation_id: StrictStr | None = Field(
        default=None, pattern=ID_PATTERN, description="Continue this conversation"
    )
    model: StrictStr | None = Field(
        default=None, min_length=1, max_length=200, description="Model id (default: DEFAULT_MODEL)"
    )
    client_request_id: StrictStr | None = Field(
        default=None,
        pattern=REQUEST_ID_PATTERN,
        description="Idempotency key: the same id returns the same stream",
    )


class ChatStarted(BaseModel):
    """Answer of ``POST /api/chat`` (202)."""

    stream_id: str
    conversation_id: str
    status: Literal["started"]

    resume_token: str = Field(
        description=(
            "Proof of ownership of this stream, signed by the server, valid 24 h: send it "
            "as `?token=` or `X-Resume-Token` to the stream, status and abort routes when "
            "the session is gone (e.g. Redis lost its data)"
        )
    )


class AbortResult(BaseModel):
    """Answer of ``POST /api/chat/stream/{id}/abort``."""

    aborted: bool
    acknowledged: bool = Field(description="The producing instance confirmed the stop")


class StreamStatus(BaseModel):
    """Answer of ``GET /api/chat/stream/{id}/status``."""

    stream_id: str
    conversation_id: str | None
    status: Literal["running", "complete", "aborted", "error"]
    text: str
    last_event_id: str | None
    created_at: float
    updated_at: float


class ActiveStream(BaseModel):
    """One running stream of the session."""

    stream_id: str
    conversation_id: str | None
    status: str
    created_at: float
    resume_token: str = Field(description="As in the answer of `POST /api/chat`")


class ActiveStreams(BaseModel):
    """Answer of ``GET /api/chat/active``."""

    streams: list[ActiveStream]


class ConversationSummary(BaseModel):
    """One conversation in the list."""

    id: str
    title: str
    created_at: float
    updated_at: float


class ConversationList(BaseModel):
    """Answer of ``GET /api/conversations``."""

    conversations: list[ConversationSummary]
    #: ``before`` of the next page; absent on the last page.
    next_cursor: str | None = None


class StoredMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str
    created_at: float
    stream_id: str | None = None
    status: Literal["done", "aborted", "error"] | None = None
    error: str | None = None
    model: str | None = None


class Conversation(ConversationSummary):
    """Answer of ``GET /api/conversations/{id}``."""

    messages: list[StoredMessage]


class Model(BaseModel):
    """A model the server can use."""

    id: str
    label: str
    provider: str
    demo: bool


class ModelList(BaseModel):
    """Answer of ``GET /api/models``."""

    models: list[Model]
    default: str


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str
