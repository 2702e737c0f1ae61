"""The protocol as one of the server's services: its ASGI app, its store, start and stop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from chatscale.config import Settings
from chatscale.durable.auth import BearerAuth
from chatscale.durable.http import DurableOptions, DurableStreamsApp
from chatscale.durable.limits import WriteLimit
from chatscale.durable.memory import MemoryStore
from chatscale.durable.store import DurableStore

if TYPE_CHECKING:
    from chatscale.ratelimit import RateLimits

log = logging.getLogger("chatscale.durable")


class DurableService:
    """Built with the app (so it can be mounted), started with the server's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: DurableStore | None = None
        options = DurableOptions(
            base_path=settings.durable_streams_path,
            long_poll_timeout_s=settings.durable_streams_long_poll_timeout,
            sse_duration_s=settings.durable_streams_sse_duration,
            max_read_bytes=settings.durable_streams_max_read,
        )
        auth = BearerAuth(
            settings.durable_streams_read_tokens,
            settings.durable_streams_write_tokens,
            open_=settings.durable_streams_auth == "none",
        )
        self.app = DurableStreamsApp(self.store, options, auth)

    def store(self) -> DurableStore:
        """The started store (a 503 before start-up is impossible: routes serve after it)."""
        if self._store is None:
            raise RuntimeError("the Durable Streams store is not started")
        return self._store

    async def start(self, redis: Any | None, limits: RateLimits | None = None) -> None:
        """Open the store: on Redis when ``USE_REDIS`` is on, else in memory; count writes
        in ``limits``' storage when ``DURABLE_STREAMS_WRITE_RATE_LIMIT`` is set."""
        limit = self.settings.durable_streams_write_rate_limit
        if limit and limits is not None:
            self.app.write_limit = WriteLimit(limits.storage, limit, limits.trusted)
        if self.settings.durable_streams_auth == "none":
            log.warning(
                "DURABLE_STREAMS_AUTH=none: anyone who reaches %s can create, read and delete "
                "streams; use it only on a trusted network",
                self.settings.durable_streams_path,
            )
        if redis is None:
            memory = MemoryStore()
            self._store = memory
            self.app.at_once = memory
        else:
            from chatscale.durable.redis_store import RedisDurableStore

            store = RedisDurableStore(redis)
            await store.start()
            self._store = store
        log.info(
            "Durable Streams served under %s (%s)",
            self.settings.durable_streams_path,
            "Redis" if redis is not None else "memory",
        )

    async def close(self) -> None:
        """Stop waiting readers and release the store."""
        await self.app.close()
        if self._store is not None:
            await self._store.close()
