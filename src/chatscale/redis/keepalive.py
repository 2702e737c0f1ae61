"""Active keep-alive: ping every connection the process holds, every ``REDIS_PING_INTERVAL``.

Idle connections die silently behind cloud load balancers (about ten minutes on Azure), and
LibreChat's pinger is never re-armed after a reconnect. Here one task runs from start-up to
close, whatever happens to the connections: each round pings the idle pooled connections and
every registered long-lived connection (pub/sub, blocking readers); a ping without an answer
within the deadline drops that connection, so it reconnects on its next use or ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from chatscale.failures import FailureLog
from chatscale.tasks import stop_task

log = logging.getLogger(__name__)

Pinger = Callable[[], Awaitable[object]]


def ping_deadline(interval_s: float) -> float:
    """How long a keep-alive ping may take: half the interval, between 1 and 5 seconds."""
    return min(5.0, max(1.0, interval_s / 2))


async def _ping_connection(connection: Any, deadline_s: float) -> bool:
    try:
        async with asyncio.timeout(deadline_s):
            await connection.connect()
            await connection.send_command("PING", check_health=False)
            await connection.read_response()
        return True
    except Exception as exc:  # any failure means: drop it, it reconnects on next use
        log.warning("redis keep-alive ping failed (%s); dropping the connection", exc)
        with contextlib.suppress(Exception):
            await connection.disconnect()
        return False


class KeepAlive:
    """Pings the client's idle connections and registered long-lived ones."""

    def __init__(self, client: Redis | RedisCluster, interval_s: float, deadline_s: float) -> None:
        self._client = client
        self.interval_s = interval_s
        self.deadline_s = deadline_s
        self._pingers: dict[int, Pinger] = {}
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        self.failures = 0
        self._round_failures = FailureLog(log, "redis keep-alive round")

    def register(self, pinger: Pinger) -> Callable[[], None]:
        """Ping ``pinger`` every round too; returns the function that unregisters it."""
        self._next_id += 1
        key = self._next_id
        self._pingers[key] = pinger

        def unregister() -> None:
            self._pingers.pop(key, None)

        return unregister

    def start(self) -> None:
        """Start the ping task (idempotent; does nothing when the interval is 0)."""
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="chatscale-redis-keepalive")

    async def stop(self) -> None:
        """Stop the ping task and wait for it."""
        task, self._task = self._task, None
        # Cancelled until it ends: a cancel that lands in a ping can come back as the
        # TimeoutError the loop survives (see stop_task).
        await stop_task(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.ping_once()
            except Exception as exc:  # the loop must survive anything
                self._round_failures.failed(exc)
            else:
                self._round_failures.succeeded()

    async def ping_once(self) -> int:
        """One round: returns how many pings were answered."""
        self.rounds += 1
        ok = 0
        if isinstance(self._client, RedisCluster):
            nodes = {id(node): node for node in self._client.get_nodes()}
            # The startup nodes are other objects than the discovered ones and keep the
            # connection that discovered the cluster (used again to rediscover it).
            for node in self._client.nodes_manager.startup_nodes.values():
                nodes.setdefault(id(node), node)
            for node in nodes.values():
                ok += await self._ping_cluster_node(node)
        else:
            ok += await self._ping_pool(self._client)
        for pinger in list(self._pingers.values()):
            try:
                async with asyncio.timeout(self.deadline_s):
                    await pinger()
                ok += 1
            except Exception as exc:
                self.failures += 1
                log.warning("redis keep-alive ping of a long-lived connection failed: %s", exc)
        return ok

    async def _ping_pool(self, client: Redis) -> int:
        pool = client.connection_pool
        # Take exactly the connections that are idle now, so none is in use by anybody
        # else while it is pinged; the pool creates a fresh one if another task needs it.
        idle = len(getattr(pool, "_available_connections", ()))
        taken = []
        try:
            for _ in range(idle):
                taken.append(await pool.get_connection())  # type: ignore[no-untyped-call]
            results = await asyncio.gather(*(_ping_connection(c, self.deadline_s) for c in taken))
        except Exception as exc:
            log.warning("redis keep-alive could not take idle connections: %s", exc)
            results = []
        finally:
            for connection in taken:
                await pool.release(connection)
        self.failures += results.count(False)
        return results.count(True)

    async def _ping_cluster_node(self, node: Any) -> int:
        free = getattr(node, "_free", None)
        if free is None:
            return 0
        taken = []
        while free:
            taken.append(free.popleft())
        try:
            results = await asyncio.gather(*(_ping_connection(c, self.deadline_s) for c in taken))
        finally:
            for connection in taken:
                node.release(connection)
        self.failures += results.count(False)
        return results.count(True)
