"""Request and response bodies of the HTTP API (also the source of ``/openapi.json``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from chatscale.server.statuses import ApiStatus, EndStatus
from chatscale.server.store import TITLE_CHARS

ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
#: What a message counts as blank with: only these characters (the same in every regex
#: dialect, unlike ``\s``).
BLANK = " \t\n\r\f\v"
#: A message that is not blank: one character outside :data:`BLANK`.
NOT_BLANK_PATTERN = r"[^ \t\n\r\f\v]"
#: The largest ``max_tokens`` a request may ask for (the model's own limit applies too).
MAX_TOKENS_CAP = 1_000_000
#: The range of ``temperature`` (OpenAI's).
TEMPERATURE_MAX = 2.0


class GenerationOptions(BaseModel):
    """Per-request options passed to the model (an OpenAI-compatible upstream takes them
    all; the demo model honours ``max_tokens`` and ignores the others)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    system: StrictStr | None = Field(
        default=None,
        min_length=1,
        pattern=NOT_BLANK_PATTERN,
        description="System prompt: sent first, before the conversation (not stored in it); "
        "at most MAX_MESSAGE_CHARS characters",
    )
    temperature: float | None = Field(
        default=None,
        ge=0,
        le=TEMPERATURE_MAX,
        allow_inf_nan=False,
        description="Sampling temperature, 0 to 2 (default: the model's)",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKENS_CAP,
        description="Most tokens of the answer (default: the model's); an answer cut by it "
        "ends with finish_reason `length`",
    )

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        # JSON has one number type: 5.0 is an integer to JSON Schema (and to clients that
        # send every number as a float), so it is one here too; 5.5, "5" and true are not.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


#: The rules between the fields of ``POST /api/chat`` (JSON Schema 2020-12 conditionals;
#: the route checks the same, naming the field: chatscale.server.api_chat).
_CHAT_REQUEST_RULES: dict[str, Any] = {
    "if": {"properties": {"regenerate": {"const": True}}, "required": ["regenerate"]},
    "then": {
        "required": ["conversation_id"],
        "properties": {"message": {"type": "null"}, "conversation_id": {"type": "string"}},
    },
    "else": {"required": ["message"], "properties": {"message": {"type": "string"}}},
}


class ChatRequest(GenerationOptions):
    """``POST /api/chat``: a new message, or (``regenerate``) the last one answered again."""

    model_config = ConfigDict(json_schema_extra=_CHAT_REQUEST_RULES)

    message: StrictStr | None = Field(
        default=None,
        min_length=1,
        pattern=NOT_BLANK_PATTERN,
        description="The user's message (not blank); required unless `regenerate`, absent with it",
    )
    conversation_id: StrictStr | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Continue this conversation (required with `regenerate`)",
    )
    regenerate: bool = Field(
        default=False,
        description="Answer the conversation's last user message again, replacing its "
        "answer: the last message is dropped when it is an answer (once per idempotency "
        "key), and the model sees the history up to the last user message. 409 while an "
        "answer runs in the conversation",
    )
    model: StrictStr | None = Field(
        default=None, min_length=1, max_length=200, description="Model id (default: DEFAULT_MODEL)"
    )
    client_request_id: StrictStr | None = Field(
        default=None,
        pattern=REQUEST_ID_PATTERN,
        description="Idempotency key (or the `Idempotency-Key` header): the same id with the "
        "same request returns the same stream; with another request, 409",
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

    aborted: bool = Field(
        description="The answer is stopped or stopping; false when it had already ended "
        "(`status` says how)"
    )
    acknowledged: bool = Field(description="The producing instance confirmed the stop")
    status: ApiStatus = Field(description="The stream's status after the request")


class StreamStatus(BaseModel):
    """Answer of ``GET /api/chat/stream/{id}/status``."""

    stream_id: str
    conversation_id: str | None
    status: ApiStatus
    text: str
    last_event_id: str | None
    created_at: float
    updated_at: float


class ActiveStream(BaseModel):
    """One running stream of the session, or one that ended and is not stored in its
    conversation yet."""

    stream_id: str
    conversation_id: str | None
    status: ApiStatus = Field(
        description="`running`, or how an answer not stored in its conversation yet ended"
    )
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
    status: EndStatus | None = None
    error: str | None = None
    model: str | None = None


class RenameConversation(BaseModel):
    """``PATCH /api/conversations/{id}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    title: StrictStr = Field(
        min_length=1,
        max_length=TITLE_CHARS,
        pattern=NOT_BLANK_PATTERN,
        description="The new title (not blank; runs of white space become one space)",
    )


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


class FieldError(BaseModel):
    """One invalid input."""

    loc: list[str | int] = Field(
        description='Where: `["body", "temperature"]`, `["header", "Idempotency-Key"]`, ...'
    )
    msg: str


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str
    fields: list[FieldError] | None = Field(
        default=None, description="The invalid inputs (422 answers)"
    )


class UIMessagePart(BaseModel):
    """One part of an AI SDK ``UIMessage`` (only ``text`` parts are read; the others, such
    as files, reasoning or tool calls, are accepted and ignored)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: StrictStr
    text: StrictStr | None = None


class UIMessage(BaseModel):
    """An AI SDK ``UIMessage``."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: StrictStr
    role: Literal["system", "user", "assistant"]
    parts: list[UIMessagePart]


class AiSdkChatRequest(GenerationOptions):
    """``POST /api/ai-sdk/chat``: what the AI SDK's ``DefaultChatTransport`` sends (plus
    chatscale's options, from the transport's ``body``)."""

    id: StrictStr = Field(
        pattern=ID_PATTERN,
        description="The chat id (`useChat`'s `id`): the conversation, created on first use",
    )
    messages: list[UIMessage] = Field(
        min_length=1,
        description="The chat's messages; the last one (a user message) is the one answered. "
        "The history the model sees is the conversation the server stored",
    )
    trigger: Literal["submit-message", "regenerate-message"] = Field(
        default="submit-message",
        description="`regenerate-message` replaces the chat's last answer with a new answer "
        "to its last user message (as `regenerate` of `POST /api/chat`; 404 for a chat never "
        "stored, 409 while an answer runs in it)",
    )
    messageId: StrictStr | None = Field(
        default=None,
        description="With `regenerate-message`: the answer being replaced (a retried request "
        "with the same id regenerates once)",
    )
    model: StrictStr | None = Field(
        default=None, min_length=1, max_length=200, description="Model id (default: DEFAULT_MODEL)"
    )
