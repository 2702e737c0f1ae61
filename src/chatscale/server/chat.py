"""Starting generations, continuing them after a takeover, storing finished answers.

The answer is recorded by the one instance whose producer's final event was stored (the
stream manager's recorder hook), from that producer's own text: what the conversation
holds is exactly what every subscriber received, and a producer that lost its job (a
takeover, a Redis stall) records nothing. A finished answer is in the conversation whether
or not a browser was connected.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatscale.db.errors import TRANSIENT_DB_ERRORS
from chatscale.llm import ChatMessage, Chunk, CompletionRequest, Provider, ProviderRegistry
from chatscale.redis.transient import TRANSIENT_REDIS_ERRORS
from chatscale.server.events import SessionEvents
from chatscale.server.statuses import end_status
from chatscale.server.store import ConversationStore, Message, title_of
from chatscale.streams import JobInfo, JobStatus, Producer, StreamManager
from chatscale.tasks import Background

if TYPE_CHECKING:
    from chatscale.ratelimit.concurrency import ConcurrencyLimiter

log = logging.getLogger(__name__)

#: Passes a model's chunks through (``ChatService(measure=...)``), e.g. timing them.
Measure = Callable[[str, AsyncIterator[Chunk]], AsyncIterator[Chunk]]

#: A finished answer's storing is retried this long (seconds), from the first delay on.
_STORE_RETRY_S = 30.0
#: How long a request that must not overlap an answer's recording (a regeneration, an AI
#: SDK resume) waits for an answer that has just ended to be recorded, and how often it
#: looks.
_SETTLE_S = 2.0
_SETTLE_POLL_S = 0.02
_STORE_RETRY_FIRST_S = 0.1
#: Failures of the conversation store that a retry gets past (failover, restart).
_TRANSIENT: tuple[type[Exception], ...] = (*TRANSIENT_REDIS_ERRORS, *TRANSIENT_DB_ERRORS)


class ConversationNotFound(Exception):
    """The conversation to continue does not exist (or is another user's)."""


class AnswerRunning(Exception):
    """An answer is still running in the conversation to regenerate in."""


class NothingToRegenerate(Exception):
    """The conversation has no user message to answer again."""


@dataclass(frozen=True, slots=True)
class Options:
    """A request's options for the model (:class:`~chatscale.server.schemas.GenerationOptions`)."""

    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    def as_meta(self) -> dict[str, Any]:
        """The options set, for the job's metadata (a takeover continues with them)."""
        return {k: v for k, v in self.as_dict().items() if v is not None}

    def as_dict(self) -> dict[str, Any]:
        """Every option, set or not."""
        return {
            "system": self.system,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Options:
        """The options a job was started with (malformed entries ignored)."""
        found = meta.get("options")
        if not isinstance(found, dict):
            return cls()
        system, temperature, max_tokens = (
            found.get("system"),
            found.get("temperature"),
            found.get("max_tokens"),
        )
        # JSON gives 1 for 1.0 (kept, as a float); a bool is an int to Python (dropped).
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            temperature = None
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            max_tokens = None
        return cls(
            system=system if isinstance(system, str) else None,
            temperature=None if temperature is None else float(temperature),
            max_tokens=max_tokens,
        )

    def request(
        self, model: str, history: list[ChatMessage], continue_from: str = ""
    ) -> CompletionRequest:
        """The provider request: the system prompt first, then the conversation."""
        messages = [ChatMessage("system", self.system), *history] if self.system else history
        return CompletionRequest(
            model,
            messages,
            continue_from=continue_from,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )


@dataclass(frozen=True, slots=True)
class Started:
    """What ``POST /api/chat`` answers."""

    stream_id: str
    conversation_id: str

    def as_json(self) -> dict[str, Any]:
        """The JSON body (without ``status``)."""
        return {"stream_id": self.stream_id, "conversation_id": self.conversation_id}


def history_of(messages: list[Message]) -> list[ChatMessage]:
    """The messages a model sees: user messages and the text of earlier answers."""
    history: list[ChatMessage] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role in ("user", "assistant") and isinstance(content, str) and content:
            history.append(ChatMessage(role, content))
    return history


class ChatService:
    """Runs generations into the stream manager and records their outcome."""

    def __init__(
        self,
        streams: StreamManager,
        registry: ProviderRegistry,
        conversations: ConversationStore,
        events: SessionEvents,
        slots: ConcurrencyLimiter | None = None,
        measure: Measure | None = None,
    ) -> None:
        self.streams = streams
        self.registry = registry
        self.conversations = conversations
        self.events = events
        #: CHAT_CONCURRENCY_LIMIT's slots: a continued answer holds one too.
        self.slots = slots
        #: Wraps each provider stream to time it (``chatscale_llm_*`` metrics).
        self.measure = measure
        self._background = Background("chat service")
        streams.set_continuation(self.continuation)
        streams.set_recorder(self.record)

    async def start(
        self,
        user: str,
        message: str,
        *,
        conversation_id: str | None,
        model: str | None,
        client_request_id: str | None,
        options: Options | None = None,
        create: bool = False,
        request_key: str | None = None,
        limit_identity: str | None = None,
        on_end: Callable[[], Awaitable[None]] | None = None,
    ) -> Started:
        """Store the user's message and start generating the answer.

        A ``conversation_id`` that does not exist raises :class:`ConversationNotFound`,
        unless ``create`` (then it is created with that id).
        ``request_key`` names the request (a retry of it stores the message once);
        ``limit_identity`` is whom the answer's CHAT_CONCURRENCY_LIMIT slot counts against
        (an instance continuing the answer takes a slot for it). Raises
        :class:`chatscale.llm.ProviderError` for an unknown model. ``on_end`` runs when this
        instance stops producing the answer (however it ends).
        """
        model_name, provider = await self.registry.resolve(model)
        earlier: list[Message] = []
        if conversation_id is None:
            conversation_id = uuid.uuid4().hex
        else:
            found = await self.conversations.get(user, conversation_id)
            if found is not None:
                earlier = found["messages"]
            elif not create:
                raise ConversationNotFound(conversation_id)
        options = options or Options()
        now = time.time()
        added = await self.conversations.add_user_message(
            user,
            conversation_id,
            {"role": "user", "content": message, "created_at": now},
            title=title_of(message),
            request_id=request_key,
        )
        if added:
            earlier = [*earlier, {"role": "user", "content": message}]
        # else: a retry; its failed attempt stored the message already (it is in earlier)
        return await self._launch(
            user,
            conversation_id,
            earlier,
            message,
            model_name=model_name,
            provider=provider,
            options=options,
            client_request_id=client_request_id,
            limit_identity=limit_identity,
            on_end=on_end,
        )

    async def regenerate(
        self,
        user: str,
        conversation_id: str,
        *,
        model: str | None,
        client_request_id: str | None,
        request_key: str,
        options: Options | None = None,
        limit_identity: str | None = None,
        on_end: Callable[[], Awaitable[None]] | None = None,
    ) -> Started:
        """Answer the conversation's last user message again, replacing its answer.

        The last message is dropped when it is an answer (once per ``request_key``: a retry
        drops no second one), and the model sees the history up to the last user message.
        Raises :class:`ConversationNotFound`, :class:`AnswerRunning` (an answer of the
        conversation runs: it would be stored after the regenerated one is started) and
        :class:`NothingToRegenerate`; the other arguments are :meth:`start`'s.
        """
        model_name, provider = await self.registry.resolve(model)
        found = await self.conversations.get(user, conversation_id)
        if found is None:
            raise ConversationNotFound(conversation_id)
        if not any(m.get("role") == "user" for m in found["messages"]):
            raise NothingToRegenerate(conversation_id)
        # Checked on this instance's view of the running jobs: two regenerations sent at the
        # same moment can both pass (each drops at most one answer; both answers are kept).
        # An answer that has just ended is waited for: it would be stored after this one
        # starts, beside it.
        if await conversation_jobs(self.streams, user, conversation_id):
            raise AnswerRunning(conversation_id)
        await self.conversations.drop_last_answer(user, conversation_id, request_id=request_key)
        found = await self.conversations.get(user, conversation_id)
        if found is None:
            raise ConversationNotFound(conversation_id)  # deleted in between
        messages: list[Message] = found["messages"]
        asked = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not asked:
            raise NothingToRegenerate(conversation_id)
        # Up to the last user message: an answer stored after it (one this request did not
        # drop, see drop_last_answer) is not history for its new answer.
        earlier = messages[: asked[-1] + 1]
        question = earlier[-1].get("content")
        return await self._launch(
            user,
            conversation_id,
            earlier,
            question if isinstance(question, str) else "",
            model_name=model_name,
            provider=provider,
            options=options or Options(),
            client_request_id=client_request_id,
            limit_identity=limit_identity,
            on_end=on_end,
            regenerate=True,
        )

    async def _launch(
        self,
        user: str,
        conversation_id: str,
        earlier: list[Message],
        message: str,
        *,
        model_name: str,
        provider: Provider,
        options: Options,
        client_request_id: str | None,
        limit_identity: str | None,
        on_end: Callable[[], Awaitable[None]] | None,
        regenerate: bool = False,
    ) -> Started:
        """Start the answer to ``earlier`` (which ends with the user's ``message``) and
        announce it to the user's other tabs."""
        meta: dict[str, Any] = {
            "conversation_id": conversation_id,
            "model": model_name,
            "history_len": len(earlier),
        }
        if options.as_meta():
            meta["options"] = options.as_meta()
        if limit_identity is not None:
            meta["limit_identity"] = limit_identity
        producer = await self.streams.create(owner=user, meta=meta)
        request = options.request(model_name, history_of(earlier))
        task = self.streams.run(producer, self._chunks(model_name, provider.stream(request)))
        if on_end is not None:
            task.add_done_callback(lambda _: self._background.spawn(self._ended(producer, on_end)))
        started: dict[str, Any] = {
            "stream_id": producer.job_id,
            "conversation_id": conversation_id,
            "client_request_id": client_request_id,
            "message": message,
            "created_at": producer.created_at,
        }
        if regenerate:
            # Other tabs replace the conversation's last answer instead of adding a turn.
            started["regenerate"] = True
        await self.events.publish(user, "started", started)
        return Started(producer.job_id, conversation_id)

    def continuation(self, info: JobInfo) -> AsyncIterator[Chunk]:
        """Continue a job another instance stopped producing (takeover)."""
        return self._continue(info)

    async def _continue(self, info: JobInfo) -> AsyncIterator[Chunk]:
        meta = info.meta
        conversation_id = meta.get("conversation_id")
        model = meta.get("model")
        length = meta.get("history_len")
        if not (isinstance(conversation_id, str) and isinstance(model, str)):
            raise ValueError("the job has no conversation to continue")
        found = await self.conversations.get(info.owner, conversation_id)
        if found is None:
            raise ValueError("the conversation of this answer is gone")
        messages = found["messages"][: length if isinstance(length, int) else None]
        _, provider = await self.registry.resolve(model)
        identity = meta.get("limit_identity")
        lease = None
        if self.slots is not None and isinstance(identity, str):
            # The answer was admitted under CHAT_CONCURRENCY_LIMIT; its new producer holds
            # a slot as its first one did (even above the limit, while the dead owner's
            # slot has not expired yet).
            lease = await self.slots.adopt(identity)
        try:
            options = Options.from_meta(meta)
            request = options.request(model, history_of(messages), continue_from=info.text)
            async for chunk in self._chunks(model, provider.stream(request)):
                yield chunk
        finally:
            if lease is not None and self.slots is not None:
                await asyncio.shield(self.slots.release(lease))

    def _chunks(self, model: str, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        return chunks if self.measure is None else self.measure(model, chunks)

    async def _ended(self, producer: Producer, on_end: Callable[[], Awaitable[None]]) -> None:
        try:
            await on_end()
        except Exception:
            log.exception("end-of-generation hook failed for stream %s", producer.job_id)

    async def record(self, producer: Producer) -> None:
        """Store a finished answer (the stream manager calls this on the one instance whose
        producer's final event was stored)."""
        message = producer.end_data.get("message")
        await self._store(
            producer.owner,
            producer.job_id,
            producer.meta,
            producer.status,
            producer.text,
            message if isinstance(message, str) else None,
        )

    async def _store(
        self,
        user: str,
        stream_id: str,
        meta: dict[str, Any],
        status: JobStatus,
        text: str,
        error: str | None,
    ) -> None:
        conversation_id = meta.get("conversation_id")
        if not isinstance(conversation_id, str):
            return
        message: Message = {
            "role": "assistant",
            "content": text,
            "stream_id": stream_id,
            "status": end_status(status),
            "model": meta.get("model"),
            "created_at": time.time(),
        }
        if error:
            message["error"] = error
        await store_answer_retrying(self.conversations, user, conversation_id, stream_id, message)
        await self.events.publish(
            user,
            "ended",
            {
                "stream_id": stream_id,
                "conversation_id": conversation_id,
                "status": message["status"],
            },
        )

    async def close(self) -> None:
        """Let answers being stored finish (briefly), then cancel the rest."""
        await self._background.close(grace=2.0)


async def conversation_jobs(
    streams: StreamManager, user: str, conversation_id: str, *, within_s: float = _SETTLE_S
) -> list[JobInfo]:
    """The listed jobs of the conversation (``list_active``), once those that ended are
    recorded: an answer that ended is waited for, up to ``within_s``, and listed only if
    its recording takes longer (its recorder is retrying, or its instance died)."""
    deadline = time.monotonic() + within_s
    while True:
        jobs = [
            job
            for job in await streams.list_active(user)
            if job.meta.get("conversation_id") == conversation_id
        ]
        if all(job.status is JobStatus.RUNNING for job in jobs) or time.monotonic() > deadline:
            return jobs
        await asyncio.sleep(_SETTLE_POLL_S)


async def store_answer_retrying(
    conversations: ConversationStore,
    user: str,
    conversation_id: str,
    stream_id: str,
    message: Message,
    *,
    within_s: float = _STORE_RETRY_S,
) -> bool:
    """Store a finished answer, retrying transient failures for up to ``within_s`` (a
    Cluster master failing over holds the conversation's slot for a few seconds): storing
    is idempotent per stream, and one instance records it. Whether it was stored (a failure
    is logged, never raised: the answer's stream still holds it until it expires)."""
    delay = _STORE_RETRY_FIRST_S
    deadline = time.monotonic() + within_s
    while True:
        try:
            await conversations.store_answer(user, conversation_id, stream_id, message)
            return True
        except _TRANSIENT as exc:
            if time.monotonic() + delay > deadline:
                log.error("cannot store the answer of stream %s: %r", stream_id, exc)
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        except Exception:
            log.exception("cannot store the answer of stream %s", stream_id)
            return False
