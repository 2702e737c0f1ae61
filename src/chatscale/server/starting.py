"""Starting an answer, for both chat APIs (``POST /api/chat`` and the AI SDK route): the
idempotency key, CHAT_RATE_LIMIT and CHAT_CONCURRENCY_LIMIT, then the chat service."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from chatscale.llm import ProviderError
from chatscale.ratelimit import ConcurrencyLimitExceeded, Lease, RateLimits
from chatscale.server.chat import (
    AnswerRunning,
    ConversationNotFound,
    NothingToRegenerate,
    Options,
    Started,
)
from chatscale.server.errors import ApiError
from chatscale.server.idempotency import StillStarting
from chatscale.server.services import Services
from chatscale.streams import ManagerClosed


@dataclass(frozen=True)
class StartRequest:
    """What starts an answer, from either chat API."""

    message: str
    conversation_id: str | None
    model: str | None
    options: Options
    request_id: str | None
    #: Create the conversation with ``conversation_id`` when missing (AI SDK chats, whose
    #: ids the client makes); else an unknown conversation is a 404.
    create: bool = False
    #: Answer the last user message of ``conversation_id`` again, replacing its answer
    #: (``message`` is unused).
    regenerate: bool = False

    def fingerprint(self) -> str:
        """What a reused idempotency key must repeat: the whole request."""
        what: list[Any] = [self.message, self.conversation_id, self.model, self.options.as_dict()]
        if self.regenerate:
            what.append("regenerate")
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


async def begin(svc: Services, request: Request, user: str, start: StartRequest) -> dict[str, Any]:
    """Start an answer for ``user`` (idempotent on ``start.request_id``), applying the
    limits: ``{"stream_id", "conversation_id"}``."""
    if svc.lifecycle.draining:
        svc.metrics.rejected.labels("draining").inc()
        raise ApiError(503, "this instance is shutting down; retry", {"Retry-After": "1"})
    assert svc.chat is not None and svc.idempotency is not None
    request_id = start.request_id
    fingerprint = start.fingerprint()
    if request_id is not None:
        try:
            earlier = await svc.idempotency.claim(user, request_id)
        except StillStarting:
            raise ApiError(
                409, "a request with this idempotency key is still starting", {"Retry-After": "1"}
            ) from None
        if earlier is not None:
            if earlier.get("request", fingerprint) != fingerprint:
                raise ApiError(
                    409,
                    "this idempotency key (client_request_id / Idempotency-Key) was used for "
                    "another request; use a new key for a new request",
                )
            return {k: v for k, v in earlier.items() if k != "request"}
    lease = None
    try:
        lease = await _admit(svc, request)
        release = None
        if lease is not None and svc.limits is not None:
            release = _releaser(svc.limits, lease)
        try:
            started = await _start(
                svc, user, start, lease.user if lease is not None else None, release
            )
        except ConversationNotFound:
            raise ApiError(404, "conversation not found") from None
        except AnswerRunning:
            raise ApiError(
                409,
                "an answer is running in this conversation: stop it or wait for its end, "
                "then regenerate",
            ) from None
        except NothingToRegenerate:
            raise ApiError(409, "this conversation has no message to answer again") from None
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
        await svc.idempotency.finish(
            user, request_id, {**started.as_json(), "request": fingerprint}
        )
    svc.metrics.chats.inc()
    return started.as_json()


async def _start(
    svc: Services,
    user: str,
    start: StartRequest,
    limit_identity: str | None,
    on_end: Callable[[], Awaitable[None]] | None,
) -> Started:
    """The chat service's start (or regeneration) of ``start``."""
    assert svc.chat is not None
    request_id = start.request_id
    if start.regenerate:
        assert start.conversation_id is not None  # validated by the routes
        # Without a client key the drop still needs one: a write repeated after a failover
        # must not drop a second answer.
        key = (
            _request_key(user, request_id, "\x00regenerate")
            if request_id is not None
            else uuid.uuid4().hex
        )
        return await svc.chat.regenerate(
            user,
            start.conversation_id,
            model=start.model,
            client_request_id=request_id,
            request_key=key,
            options=start.options,
            limit_identity=limit_identity,
            on_end=on_end,
        )
    conversation_id = start.conversation_id
    create = start.create
    request_key = None
    if request_id is not None:
        request_key = _request_key(user, request_id, start.message)
        if conversation_id is None:
            # A retry must land in the conversation its failed attempt may have created.
            conversation_id, create = request_key[:32], True
    return await svc.chat.start(
        user,
        start.message,
        conversation_id=conversation_id,
        model=start.model,
        client_request_id=request_id,
        options=start.options,
        create=create,
        request_key=request_key,
        limit_identity=limit_identity,
        on_end=on_end,
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
