"""One pub/sub subscription per process carrying near-cache invalidations.

Every write to a near-cached namespace publishes ``{"o": ORIGIN, "n": NAMESPACE, "k": [keys]}``
(``ORIGIN`` is a random id of the publishing process, which skips its own echoes) on the
prefixed channel ``KeySpace.cache_invalidation_channel`` (``{"n": NAMESPACE}`` clears a
namespace, ``{"n": null}`` every namespace). The process's single subscriber fans each
message out to its local near caches.

The link state gates the near caches: while the subscription is not confirmed (start-up,
a dropped connection, a failed keep-alive ping), :attr:`Invalidator.ready` is false, every
near cache is emptied and reads go to Redis. Each (re)subscription bumps
:attr:`Invalidator.generation`, so a read that began before a reconnect never stores
what it fetched (invalidations may have been missed in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatscale.failures import FailureLog
from chatscale.tasks import stop_task

if TYPE_CHECKING:
    from chatscale.redis import RedisConnection

log = logging.getLogger(__name__)

#: Seconds one read of the subscription waits (well below the socket timeout).
READ_TIMEOUT_S = 1.0
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0


class Listener(Protocol):
    """What a near cache offers the invalidator."""

    def invalidate(self, keys: Iterable[str] | None) -> None:
        """Forget ``keys`` (``None``: everything)."""


class Invalidator:
    """The process's subscription to cache invalidations, and their publisher."""

    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self.channel = connection.keys.cache_invalidation_channel
        self._listeners: dict[str, list[Listener]] = {}
        self._task: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._pong = asyncio.Event()
        self._ready_event = asyncio.Event()
        self._unregister_ping: Callable[[], None] | None = None
        self._closed = False
        # This process's own messages are skipped: its caches were invalidated locally
        # when the write returned, and the echo would only evict fresh entries.
        self.origin = secrets.token_hex(8)
        self.ready = False
        self.generation = 0
        self.received = 0
        self.reconnects = 0
        self._failures = FailureLog(log, "cache invalidation subscription")

    def add_listener(self, namespace: str, listener: Listener) -> None:
        """Deliver invalidations of ``namespace`` to ``listener``."""
        self._listeners.setdefault(namespace, []).append(listener)

    def ensure_started(self) -> None:
        """Start the subscriber task if it is not running (needs a running event loop)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="chatscale-cache-invalidator"
            )

    async def wait_ready(self, timeout_s: float = 5.0) -> bool:
        """Start if needed and wait until subscribed; ``False`` on timeout."""
        self.ensure_started()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._ready_event.wait()
        return self.ready

    # --- publishing --------------------------------------------------------------------
    async def publish(self, namespace: str | None, keys: Iterable[str] | None = None) -> None:
        """Tell every process (this one included) to forget ``keys`` of ``namespace``.

        ``keys=None`` means the whole namespace; ``namespace=None`` every namespace.
        """
        message: dict[str, Any] = {"o": self.origin, "n": namespace}
        if keys is not None:
            message["k"] = list(keys)
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        await self.connection.client.publish(self.channel, payload.encode("utf-8", "replace"))

    # --- receiving ---------------------------------------------------------------------
    def _drop_all(self) -> None:
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.invalidate(None)

    def _set_down(self) -> None:
        self.ready = False
        self._ready_event.clear()
        self.generation += 1
        self._drop_all()

    def _dispatch(self, data: bytes) -> None:
        self.received += 1
        try:
            message = json.loads(data)
            if message.get("o") == self.origin:
                return
            namespace = message["n"]
            keys = message.get("k")
            if keys is not None and not isinstance(keys, list):
                raise ValueError("k is not a list")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("unreadable cache invalidation %r; dropping every near cache", data[:80])
            self._drop_all()
            return
        if namespace is None:
            self._drop_all()
            return
        for listener in self._listeners.get(str(namespace), ()):
            listener.invalidate(None if keys is None else [str(k) for k in keys])

    async def _ping(self) -> None:
        # Registered with the keep-alive: a subscription that does not answer within the
        # deadline is torn down, so the near caches are dropped instead of going stale.
        pubsub = self._pubsub
        if pubsub is None:
            return
        answered = False
        self._pong.clear()
        try:
            await pubsub.ping()
            await self._pong.wait()
            answered = True
        finally:
            if not answered and pubsub is self._pubsub:
                self._set_down()
                connection = getattr(pubsub, "connection", None)
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.disconnect()

    async def _session(self) -> None:
        pubsub: Any = self.connection.client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            connection = pubsub.connection
            saved_retry = connection.retry
            # No silent reconnect under us: a lost link must surface at once so the near
            # caches are dropped (redis-py would otherwise retry and resubscribe quietly).
            connection.retry = Retry(NoBackoff(), 0)
            try:
                await self._listen(pubsub)
            finally:
                connection.retry = saved_retry
        finally:
            self._pubsub = None
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _listen(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=READ_TIMEOUT_S)
            if message is None:
                if pubsub.connection is None:
                    raise ConnectionError("subscription connection closed")
                continue
            kind = message.get("type")
            if kind == "message":
                self._dispatch(message["data"])
            elif kind == "subscribe":
                # Anything cached before this point may have missed invalidations.
                self._pubsub = pubsub
                self.generation += 1
                self._drop_all()
                self.ready = True
                self._ready_event.set()
                self._failures.succeeded()
            elif kind == "pong":
                self._pong.set()

    async def _run(self) -> None:
        self._unregister_ping = self.connection.keepalive.register(self._ping)
        delay = RETRY_MIN_S
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                self._set_down()
                raise
            except Exception as exc:
                self._failures.failed(exc)
            was_ready = self.ready
            self._set_down()
            self.reconnects += 1
            delay = RETRY_MIN_S if was_ready else min(RETRY_MAX_S, delay * 2)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        """Stop the subscriber and drop every near cache."""
        self._closed = True
        if self._unregister_ping is not None:
            self._unregister_ping()
            self._unregister_ping = None
        task, self._task = self._task, None
        # Cancelled until it ends (see stop_task: one cancel can be lost in a Redis call).
        await stop_task(task)
        self._set_down()
