"""What every language-model provider offers: one streaming call and a list of models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from chatscale.errors import UserFacingError

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation as sent to a model."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One answer to generate.

    ``continue_from`` is the text an earlier attempt already produced (a takeover after the
    producing instance died): the provider continues it and yields only the rest.
    ``max_tokens`` and ``temperature`` are the client's options (None: the model's default);
    a system prompt is a ``system`` message first in ``messages``.
    """

    model: str
    messages: Sequence[ChatMessage]
    continue_from: str = ""
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed answer.

    ``text`` is appended to the answer; a chunk with ``event`` set is a status or tool event
    (``event`` is its type, ``data`` its payload); ``finish_reason`` marks the last chunk.
    """

    text: str = ""
    event: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model a provider serves, as listed by ``GET /api/models``."""

    id: str
    provider: str
    label: str
    demo: bool = False


class ProviderError(UserFacingError):
    """A provider failed; the message is safe and readable enough to show the user.

    Providers put what an upstream said (which can quote keys or hosts) in the log, never
    in this message.
    """


@runtime_checkable
class Provider(Protocol):
    """A source of streamed answers."""

    name: str

    async def models(self) -> list[ModelInfo]:
        """The models this provider serves."""
        ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        """Stream the answer; closing the iterator must close the upstream request."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
