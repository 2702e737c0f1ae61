"""``limits`` storages built from chatscale's Redis settings (or process memory).

The storage gets the same nodes, credentials, TLS files, timeouts and pool bound as
chatscale's own client, and keys under ``KeySpace.limits_prefix`` (``<prefix>::limits:...``),
so deployments sharing a Redis never count each other's requests and ACL users restricted to
``~<prefix>::*`` can use it. It uses redis-py (``implementation="redispy"``) and plain
``limits`` (its ``redis`` extra would pin redis-py below 8).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from typing import Any

from limits.aio.storage import (
    MemoryStorage,
    RedisClusterStorage,
    RedisSentinelStorage,
    RedisStorage,
    Storage,
)
from redis.asyncio import BlockingConnectionPool

from chatscale.config import RedisConfig
from chatscale.redis.client import driver_info, tls_kwargs
from chatscale.redis.connections import pack_cluster, packing_class
from chatscale.redis.keepalive import KeepAlive, ping_deadline
from chatscale.redis.keys import KeySpace
from chatscale.redis.uri import Topology


def _common_options(config: RedisConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_connect_timeout": config.connect_timeout_s,
        "socket_timeout": config.socket_timeout_s,
        "socket_keepalive": True,
        "client_name": "chatscale-limits",
        "driver_info": driver_info(),
    }
    if config.ping_interval_s > 0:
        # As chatscale's own client: a connection idle this long is pinged before use.
        options["health_check_interval"] = config.ping_interval_s
    if config.target.username is not None:
        options["username"] = config.target.username
    if config.target.password is not None:
        options["password"] = config.target.password
    return options


#: Seconds between two expiry passes of :class:`ThrottledMemoryStorage`.
EXPIRY_PERIOD_S = 1.0


class ThrottledMemoryStorage(MemoryStorage):
    """``limits``' memory storage with its expiry pass run at most once per
    :data:`EXPIRY_PERIOD_S`, inline.

    ``limits`` 5.8 starts a pass after every hit whenever none is running, and the pass
    visits every moving window with one ``asyncio.to_thread`` each: with many visitors a
    server without Redis spent up to a quarter of a short chat's CPU there (bench h2), and
    the cost grows with the number of identities. Expired entries are never counted by a
    moving window's reads, so a pass only frees memory: once a second is plenty.
    """

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri, **options)
        self._next_pass = 0.0
        self.passes = 0

    # Overrides the base class's private hook (name-mangled): limits is pinned below 6.
    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_pass:
            self._next_pass = now + EXPIRY_PERIOD_S
            self.expire()

    def expire(self) -> None:
        """Drop expired moving-window entries and fixed-window counters (synchronous: no
        other task runs meanwhile, so only windows whose lock is held are skipped)."""
        self.passes += 1
        now = time.time()
        for key, events in list(self.events.items()):
            lock = self.locks.get(key)
            if lock is not None and lock.locked():
                continue
            # Newest first: the entries still alive are those before the first expired one.
            alive = bisect.bisect_left(events, -now, key=lambda event: -event.expiry)
            if alive:
                del events[alive:]
            else:
                del self.events[key]
                self.locks.pop(key, None)
        for key, expiry in list(self.expirations.items()):
            lock = self.locks.get(key)
            if expiry <= now and not (lock is not None and lock.locked()):
                self.storage.pop(key, None)
                del self.expirations[key]
                self.locks.pop(key, None)


def create_limits_storage(config: RedisConfig | None) -> Storage:
    """A ``limits`` async storage for ``config``'s topology; memory when ``config`` is None."""
    if config is None:
        return ThrottledMemoryStorage()
    prefix = KeySpace(config.prefix).limits_prefix
    target = config.target
    options = _common_options(config)
    tls = tls_kwargs(config)
    hosts = ",".join(str(node) for node in target.nodes)
    if target.topology is Topology.CLUSTER:
        cluster = RedisClusterStorage(
            f"async+redis+cluster://{hosts}",
            implementation="redispy",
            key_prefix=prefix,
            max_connections=config.max_connections,
            require_full_coverage=True,
            **({"ssl": True, **tls} if tls else {}),
            **options,
        )
        # redis-py's Cluster client, built and not connected yet (limits types it loosely).
        pack_cluster(cluster.bridge.storage)  # type: ignore[attr-defined]
        return cluster
    if target.topology is Topology.SENTINEL:
        assert target.service_name is not None
        sentinel_kwargs: dict[str, Any] = {
            "socket_connect_timeout": config.connect_timeout_s,
            "socket_timeout": config.socket_timeout_s,
            "driver_info": driver_info(),
        }
        if config.sentinel_username is not None:
            sentinel_kwargs["username"] = config.sentinel_username
        if config.sentinel_password is not None:
            sentinel_kwargs["password"] = config.sentinel_password
        if tls:
            sentinel_kwargs.update(ssl=True, **tls)
        # For every pool the Sentinel client makes (its master's, its replicas').
        pools: dict[str, Any] = {"connection_class": packing_class(tls=bool(tls), sentinel=True)}
        if tls:
            pools.update(ssl=True, **tls)
        return RedisSentinelStorage(
            f"async+redis+sentinel://{hosts}/{target.service_name}",
            implementation="redispy",
            key_prefix=prefix,
            use_replicas=False,  # counters must be read where they are written
            sentinel_kwargs=sentinel_kwargs,
            db=target.db,
            **pools,
            **options,
        )
    node = target.nodes[0]
    # A waiting pool: redis-py's default one raises once its connections are all in use.
    pool = BlockingConnectionPool(
        max_connections=config.max_connections,
        timeout=config.pool_timeout_s,
        host=node.host,
        port=node.port,
        db=target.db,
        connection_class=packing_class(tls=bool(tls)),
        **tls,
        **options,
    )
    scheme = "async+rediss" if tls else "async+redis"
    return RedisStorage(
        f"{scheme}://{hosts}/{target.db}",
        implementation="redispy",
        key_prefix=prefix,
        connection_pool=pool,  # type: ignore[arg-type]
    )


def limits_keepalive(storage: Storage, config: RedisConfig | None) -> KeepAlive | None:
    """REDIS_PING_INTERVAL's pinger of ``storage``'s idle connections (not started), or None
    for process memory or when the interval is 0."""
    if config is None or config.ping_interval_s <= 0:
        return None
    client = getattr(getattr(storage, "bridge", None), "storage", None)
    if client is None:
        return None
    return KeepAlive(client, config.ping_interval_s, ping_deadline(config.ping_interval_s))


async def close_limits_storage(storage: Storage) -> None:
    """Close every connection ``storage`` opened (``limits`` has no close of its own)."""
    if isinstance(storage, MemoryStorage):
        timer = storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        return
    bridge: Any = getattr(storage, "bridge", None)
    if bridge is None:
        return
    clients = [getattr(bridge, "storage", None), getattr(bridge, "storage_replica", None)]
    sentinel = getattr(bridge, "sentinel", None)
    clients.extend(getattr(sentinel, "sentinels", ()) if sentinel is not None else ())
    for client in clients:
        if client is not None:
            await client.aclose()
    if isinstance(storage, RedisStorage) and not isinstance(
        storage, RedisClusterStorage | RedisSentinelStorage
    ):
        pool = getattr(bridge.storage, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()
