"""Everything the routes use, built at start-up and closed at shutdown."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

from starlette.responses import Response

from chatscale.cache.namespaces import CacheKeys
from chatscale.config import Settings
from chatscale.db.database import Database
from chatscale.db.sessions import SqlSessionStore
from chatscale.llm import ProviderRegistry, build_registry
from chatscale.ratelimit import RateLimits
from chatscale.ratelimit.guard import refusal_response
from chatscale.ratelimit.responses import RATE_LIMITED
from chatscale.redis import RedisConnection, connect
from chatscale.server.chat import ChatService
from chatscale.server.events import SessionEvents
from chatscale.server.generation_metrics import configured_models
from chatscale.server.idempotency import IdempotencyStore, create_idempotency_store
from chatscale.server.lifecycle import Lifecycle
from chatscale.server.metrics import ServerMetrics
from chatscale.server.resume import ResumeTokens
from chatscale.server.sse import Streams
from chatscale.server.store import ConversationStore, create_conversation_store
from chatscale.sessions.middleware import NewSessionGate
from chatscale.sessions.store import SessionStore
from chatscale.streams import StreamManager, create_stream_manager

log = logging.getLogger("chatscale.server")


@dataclass
class Services:
    """The application's state (``request.app.state.services``)."""

    settings: Settings
    instance_id: str
    lifecycle: Lifecycle
    metrics: ServerMetrics
    sse: Streams
    redis: RedisConnection | None = None
    #: The SQL database of conversations (and sessions without Redis), when configured.
    database: Database | None = None
    streams: StreamManager | None = None
    registry: ProviderRegistry | None = None
    conversations: ConversationStore | None = None
    idempotency: IdempotencyStore | None = None
    events: SessionEvents | None = None
    chat: ChatService | None = None
    limits: RateLimits | None = None
    #: Resume tokens, keyed like the session cookies (set once the session manager is built).
    tokens: ResumeTokens | None = None

    async def start(self) -> None:
        """Connect and start everything (Redis only when USE_REDIS is on)."""
        settings = self.settings
        if settings.redis is not None:
            self.redis = await connect(settings.redis)
        forced = settings.forced_in_memory_cache_namespaces
        if settings.database is not None:
            self.database = Database(settings.database)
            await self.database.start(migrate=settings.database_migrate)
        self.streams = create_stream_manager(settings, self.redis, instance_id=self.instance_id)
        # Every visitor of this server is anonymous (no login): counted by session, a
        # client would get a fresh budget with every session it mints.
        self.limits = await RateLimits.create(settings, self.redis, anonymous_by_ip=True)
        self.registry = build_registry(settings)
        self.metrics.watch_models(self.registry.token_counts)
        # FORCED_IN_MEMORY_CACHE_NAMESPACES applies to the server's namespaces too.
        self.conversations = create_conversation_store(
            None if CacheKeys.CONVERSATIONS in forced else self.redis,
            settings.conversation_retention,
            self.database,
        )
        self.idempotency = create_idempotency_store(
            None if CacheKeys.IDEMPOTENCY in forced else self.redis
        )
        self.events = SessionEvents(self.instance_id, self.redis)
        await self.events.start()
        self.chat = ChatService(
            self.streams,
            self.registry,
            self.conversations,
            self.events,
            slots=self.limits.concurrency if self.limits is not None else None,
            measure=self.metrics.generations.measure,
        )
        # Started once the chat service has registered its continuation: a started manager
        # may take over another instance's answer at any moment (its reaper claims those
        # of stopped instances), and without a continuation it ends them with an error.
        await self.streams.start()
        self.metrics.watch_streams(lambda: self.streams.metrics if self.streams else None)
        self.lifecycle.on_drain(self.drain)

    def session_store(self) -> SessionStore | None:
        """Sessions in the database when Redis is not used (they survive a restart), else
        None: the sessions package's own choice (Redis)."""
        if self.redis is not None or self.database is None:
            return None
        return SqlSessionStore(self.database.engine)

    def session_gate(self) -> NewSessionGate | None:
        """SESSION_CREATE_LIMIT, per client address, on requests that would create a session."""
        if self.limits is None:
            return None
        guard = self.limits.guard(
            self.settings.session_create_limit, name="session", variable="SESSION_CREATE_LIMIT"
        )

        async def gate(scope: Any) -> Response | None:
            refusal = await guard.check(scope)
            if refusal is None:
                return None
            if refusal.status == RATE_LIMITED:
                limit = refusal.error.removeprefix("rate limit exceeded: ")
                refusal = replace(
                    refusal,
                    error=f"too many new sessions from this address: {limit} "
                    "(SESSION_CREATE_LIMIT); send the session cookie back",
                )
            return refusal_response(refusal)

        return gate

    async def drain(self) -> None:
        """Hand running generations over (or let them finish) within STREAM_DRAIN_TIMEOUT."""
        self.sse.reconnect_all()
        if self.streams is not None:
            await self.streams.drain(float(self.settings.stream_drain_timeout))
        if self.chat is not None:
            await self.chat.close()

    async def close(self) -> None:
        """Release everything, in reverse order of start."""
        self.sse.reconnect_all()
        if self.chat is not None:
            await self.chat.close()
        if self.events is not None:
            await self.events.close()
        if self.streams is not None:
            await self.streams.close()
        if self.registry is not None:
            await self.registry.aclose()
        if self.limits is not None:
            await self.limits.aclose()
        if self.redis is not None:
            await self.redis.close()
        if self.database is not None:
            await self.database.close()


def new_services(settings: Settings) -> Services:
    """Services not started yet."""
    return Services(
        settings=settings,
        instance_id=uuid.uuid4().hex[:12],
        lifecycle=Lifecycle(),
        metrics=ServerMetrics(configured_models(settings)),
        sse=Streams(),
    )
