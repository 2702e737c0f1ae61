"""Announcements of a user's streams starting and ending, for ``GET /api/events``.

Locally a fan-out to this process's listeners; across instances one prefixed Redis pub/sub
channel that every process subscribes to once (two small messages per chat, whatever the
number of listeners). Messages carry the publishing instance, which delivers its own
announcements directly and ignores their echo.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.exceptions import RedisError

from chatscale.failures import FailureLog
from chatscale.redis.connection import RedisConnection
from chatscale.tasks import stop_task

log = logging.getLogger(__name__)

Announcement = dict[str, Any]
#: Announcements a slow listener may have queued before it is dropped.
LISTENER_QUEUE = 256


class SessionEvents:
    """Per-user fan-out of announcements, local or through Redis."""

    def __init__(self, instance_id: str, connection: RedisConnection | None = None) -> None:
        self.instance_id = instance_id
        self._connection = connection
        self._listeners: dict[str, set[asyncio.Queue[Announcement | None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._unregister: Callable[[], None] | None = None
        self.connected = asyncio.Event()

    @property
    def listeners(self) -> int:
        """Open listeners on this instance."""
        return sum(len(q) for q in self._listeners.values())

    async def start(self) -> None:
        """Subscribe to the shared channel (with Redis)."""
        if self._connection is not None and self._task is None:
            self._task = asyncio.create_task(self._listen(self._connection))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.connected.wait(), 5)

    async def close(self) -> None:
        """Stop listening and end every listener's feed."""
        if self._task is not None:
            # Cancelled until it ends (see stop_task: one cancel can be lost in a Redis call).
            await stop_task(self._task)
            self._task = None
        for queues in self._listeners.values():
            for queue in queues:
                queue.put_nowait(None)

    async def publish(self, user: str, kind: str, data: dict[str, Any]) -> None:
        """Announce ``kind`` (``started`` / ``ended``) of one of ``user``'s streams."""
        message = {"user": user, "kind": kind, "data": data, "from": self.instance_id}
        self._deliver(message)
        if self._connection is None:
            return
        client = self._connection.client
        channel = self._connection.keys.session_events_channel
        payload = json.dumps(message, separators=(",", ":"))
        try:
            if self._connection.is_cluster:
                await client.execute_command("SPUBLISH", channel, payload)
            else:
                await client.publish(channel, payload)
        except RedisError as exc:
            # Other tabs then see the stream on their next page load or active-list fetch.
            log.warning("cannot announce a stream to other instances: %s", exc)

    async def listen(self, user: str) -> AsyncIterator[Announcement]:
        """This user's announcements until :meth:`close` or the caller stops iterating."""
        queue: asyncio.Queue[Announcement | None] = asyncio.Queue(LISTENER_QUEUE)
        self._listeners.setdefault(user, set()).add(queue)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            queues = self._listeners.get(user)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._listeners[user]

    def _deliver(self, message: Announcement) -> None:
        for queue in list(self._listeners.get(message["user"], ())):
            # A listener this far behind is not reading; it misses announcements, not chats.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait({"kind": message["kind"], "data": message["data"]})

    async def _listen(self, connection: RedisConnection) -> None:
        channel = connection.keys.session_events_channel
        delay = 0.1
        failures = FailureLog(log, "session events subscription")
        while True:
            pubsub = connection.client.pubsub()
            unregister: Callable[[], None] | None = None
            try:
                if connection.is_cluster:
                    await pubsub.ssubscribe(channel)
                else:
                    await pubsub.subscribe(channel)
                unregister = connection.keepalive.register(pubsub.ping)
                self.connected.set()
                failures.succeeded()
                delay = 0.1
                while True:
                    if connection.is_cluster:
                        message = await pubsub.get_sharded_message(  # type: ignore[attr-defined]
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                    else:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                    if message is not None:
                        self._on_message(message.get("data"))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                failures.failed(exc)
                self.connected.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if unregister is not None:
                    unregister()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_message(self, payload: Any) -> None:
        try:
            message = json.loads(payload)
        except (TypeError, ValueError):
            return
        if not isinstance(message, dict) or message.get("from") == self.instance_id:
            return
        if isinstance(message.get("user"), str) and isinstance(message.get("data"), dict):
            self._deliver(message)
