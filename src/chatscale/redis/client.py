"""One asyncio Redis client for the configured topology, with a pool that waits.

Standalone and Sentinel use a blocking pool (on Sentinel, one that connects only to the
master every answering sentinel names: :mod:`chatscale.redis.sentinel`): a command waits up
to ``REDIS_POOL_TIMEOUT`` for a free connection instead of failing at once (redis-py's
default pool raises). redis-py's Cluster client has no waiting pool, so
:class:`BoundedRedisCluster` bounds the commands in flight with a semaphore of the same size
and wait. Every connection packs its commands with hiredis (:mod:`chatscale.redis.connections`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import traceback
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatscale import __version__
from chatscale.redis.connections import pack_cluster, packing_class
from chatscale.redis.sentinel import AgreedSentinelPool
from chatscale.redis.uri import Topology

if TYPE_CHECKING:
    from chatscale.config import RedisConfig

AnyRedis: TypeAlias = "Redis | RedisCluster"
"""Either client: both offer the same command methods, pipelines and pub/sub."""

CLIENT_NAME = "chatscale"
_BACKOFF_BASE_S = 0.05


class _Bounded:
    """A semaphore with a deadline: the waiting part of a connection pool."""

    def __init__(self, size: int, timeout_s: float) -> None:
        self._sem = asyncio.Semaphore(size)
        self._timeout_s = timeout_s

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._sem.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        try:
            yield
        finally:
            self._sem.release()


def _writer_race(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py's leak of a write on a connection closed under it
    (redis/redis-py#4287, #3546: ``'NoneType' object has no attribute 'writelines'`` and
    kin instead of a ConnectionError; under uvloop ``RuntimeError: unable to perform
    operation on <TCPTransport closed=True ...>``), seen on Cluster pipelines while a master
    was paused. Only errors raised inside redis-py's connection code (or the transport it
    writes to) count: our own bugs stay bugs."""
    if not isinstance(exc, AttributeError | TypeError | RuntimeError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and any(
        frame.filename.endswith(("redis/asyncio/connection.py", "asyncio/streams.py"))
        for frame in frames[-4:]
    )


@contextlib.asynccontextmanager
async def _closed_writes_are_connection_errors() -> AsyncIterator[None]:
    try:
        yield
    except (AttributeError, TypeError, RuntimeError) as exc:
        if _writer_race(exc):
            raise RedisConnectionError(f"connection closed during a write ({exc})") from exc
        raise


class BoundedClusterPipeline(ClusterPipeline):
    """A Cluster pipeline that takes one slot of its client's bound while it runs."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, BoundedRedisCluster)
        async with client.bound.slot(), _closed_writes_are_connection_errors():
            return await super().execute(raise_on_error, allow_redirections)


class BoundedRedisCluster(RedisCluster):
    """RedisCluster whose commands wait for one of ``max_connections`` slots."""

    def __init__(
        self, *args: Any, max_connections: int, pool_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, max_connections=max_connections, **kwargs)  # type: ignore[misc]
        self.bound = _Bounded(max_connections, pool_timeout_s)
        pack_cluster(self)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.bound.slot(), _closed_writes_are_connection_errors():
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises, as upstream does
        return BoundedClusterPipeline(self, transaction)  # type: ignore[abstract]


# redis-py's Retry takes -1 for "forever", but its Cluster client computes its attempt
# count as retries + 1 and so runs no attempt at all (every command returns None): on
# Cluster, "forever" is this many attempts instead.
_CLUSTER_FOREVER = 1_000_000


def _retry(config: RedisConfig) -> Retry:
    attempts = config.retry_max_attempts
    if attempts == 0:
        attempts = _CLUSTER_FOREVER if config.topology is Topology.CLUSTER else -1
    return Retry(
        ExponentialWithJitterBackoff(cap=config.retry_max_delay_s, base=_BACKOFF_BASE_S),
        attempts,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )


def tls_kwargs(config: RedisConfig) -> dict[str, Any]:
    """redis-py TLS arguments for ``config`` (verification always on; empty without TLS)."""
    if config.tls is None:
        return {}
    kwargs: dict[str, Any] = {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }
    if config.tls.ca_file:
        kwargs["ssl_ca_certs"] = str(config.tls.ca_file)
    if config.tls.cert_file and config.tls.key_file:
        kwargs["ssl_certfile"] = str(config.tls.cert_file)
        kwargs["ssl_keyfile"] = str(config.tls.key_file)
    return kwargs


@functools.cache
def driver_info() -> DriverInfo:
    """What every connection tells Redis of itself (``CLIENT SETINFO``, shown by ``CLIENT
    LIST``): ``lib-name=redis-py(chatscale_v<version>)`` and redis-py's version.

    Made once: given none, redis-py makes one per new connection and reads its own package
    metadata from disk each time, about a millisecond of CPU per connection here, which a
    burst of new connections (a start, a failover's reconnections) paid in full.
    """
    return DriverInfo().add_upstream_driver("chatscale", __version__)


def _connection_kwargs(config: RedisConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "username": config.target.username,
        "password": config.target.password,
        "socket_connect_timeout": config.connect_timeout_s,
        "socket_timeout": config.socket_timeout_s,
        "socket_keepalive": True,
        "retry": _retry(config),
        "client_name": CLIENT_NAME,
        "driver_info": driver_info(),
        "decode_responses": False,
    }
    if config.ping_interval_s > 0:
        # redis-py pings a connection before use when it sat idle this long; the
        # KeepAlive task pings the idle ones actively.
        kwargs["health_check_interval"] = config.ping_interval_s
    return kwargs


def create_client(config: RedisConfig) -> AnyRedis:
    """Build (without connecting) the client for ``config``'s topology."""
    kwargs = _connection_kwargs(config)
    tls = tls_kwargs(config)
    target = config.target
    if target.topology is Topology.CLUSTER:
        return BoundedRedisCluster(
            startup_nodes=[ClusterNode(n.host, n.port) for n in target.nodes],
            max_connections=config.max_connections,
            pool_timeout_s=config.pool_timeout_s,
            require_full_coverage=True,
            # No address_remap, whatever REDIS_USE_ALTERNATIVE_DNS_LOOKUP says: redis-py
            # connects to the host a node announces without resolving it first, so TLS checks
            # each node's certificate against that name. This is what ioredis's
            # ``dnsLookup: (address, done) => done(null, address)`` achieves for ElastiCache;
            # remapping announced nodes by port onto the configured host collapsed every
            # ElastiCache node (all on 6379) into one.
            ssl=config.tls is not None,
            **tls,
            **kwargs,
        )
    if target.topology is Topology.SENTINEL:
        sentinel_kwargs: dict[str, Any] = {
            "username": config.sentinel_username,
            "password": config.sentinel_password,
            "socket_connect_timeout": config.connect_timeout_s,
            "socket_timeout": config.socket_timeout_s,
            "driver_info": driver_info(),
        }
        if config.tls is not None:
            sentinel_kwargs.update(ssl=True, **tls)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(n.host, n.port) for n in target.nodes],
            sentinel_kwargs=sentinel_kwargs,
            ssl=config.tls is not None,
            **tls,
            **kwargs,
        )
        assert target.service_name is not None
        master: Redis = sentinel.master_for(
            target.service_name,
            connection_pool_class=AgreedSentinelPool,
            connection_class=packing_class(tls=config.tls is not None, sentinel=True),
            max_connections=config.max_connections,
            timeout=config.pool_timeout_s,
            db=target.db,
        )
        return master
    node = target.nodes[0]
    kwargs.update(connection_class=packing_class(tls=config.tls is not None), **tls)
    pool = BlockingConnectionPool(
        max_connections=config.max_connections,
        timeout=config.pool_timeout_s,
        host=node.host,
        port=node.port,
        db=target.db,
        **kwargs,
    )
    return Redis.from_pool(pool)
