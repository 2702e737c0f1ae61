"""The process's Redis handle: client, key space and keep-alive, from start-up to close."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from chatscale.errors import RedisUnavailableError
from chatscale.redis.client import AnyRedis, create_client
from chatscale.redis.keepalive import KeepAlive, ping_deadline
from chatscale.redis.keys import KeySpace
from chatscale.redis.replication import Queue, Replication, write_durably
from chatscale.redis.uri import Topology

if TYPE_CHECKING:
    from chatscale.config import RedisConfig


#: What Cluster writes are judged by: no replica ever seen (see ``write_durably``).
_NEVER_WAITS = Replication()


class RedisConnection:
    """Owns the client for one process. Use :func:`connect` to build one."""

    def __init__(self, config: RedisConfig, client: AnyRedis) -> None:
        self.config = config
        self.client: AnyRedis = client
        self.keys = KeySpace(config.prefix)
        #: The master's replicas as last seen (writes that must survive a failover wait).
        self.replication = Replication()
        self.keepalive = KeepAlive(
            client, config.ping_interval_s, ping_deadline(config.ping_interval_s)
        )
        self._closed = False

    @property
    def topology(self) -> Topology:
        """The deployment's topology."""
        return self.config.topology

    @property
    def is_cluster(self) -> bool:
        """Whether commands go through a Cluster client."""
        return isinstance(self.client, RedisCluster)

    async def write_durably(self, queue: Queue, what: str) -> list[Any]:
        """Run an idempotent write so that it survives a failover: with replicas, until one
        has it (:mod:`chatscale.redis.replication`; not on Cluster, where the client does
        not expose the connection that took the write). The replies of every attempt."""
        replication = self.replication if not self.is_cluster else _NEVER_WAITS
        return await write_durably(self.client, replication, queue, what)

    async def ping(self) -> float:
        """Round-trip time of one PING in seconds."""
        start = time.perf_counter()
        await self.client.ping()
        return time.perf_counter() - start

    async def close(self) -> None:
        """Stop the keep-alive and close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self.keepalive.stop()
        await close_client(self.client)

    async def __aenter__(self) -> RedisConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _describe_failure(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return f"TLS failure: {cause}"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def connect(config: RedisConfig) -> RedisConnection:
    """Connect to the configured Redis and check it answers; start the keep-alive.

    Raises :class:`RedisUnavailableError` with the reason when Redis cannot be reached
    within ``REDIS_CONNECT_TIMEOUT`` (plus retries).
    """
    client = create_client(config)
    connection = RedisConnection(config, client)
    nodes = ", ".join(str(n) for n in config.target.nodes)
    budget = config.connect_timeout_s * 2 + 5
    try:
        async with asyncio.timeout(budget):
            if isinstance(client, RedisCluster):
                # Initialise before any burst of commands: concurrent first commands on an
                # uninitialised async Cluster client have raised internal errors.
                await client.initialize()
            await client.ping()
    except (RedisError, OSError, TimeoutError, ssl.SSLError) as exc:
        await _close_quietly(client)
        raise RedisUnavailableError(
            f"cannot reach Redis ({config.topology.value} at {nodes}): {_describe_failure(exc)}"
        ) from exc
    except BaseException:
        await _close_quietly(client)
        raise
    connection.keepalive.start()
    return connection


async def close_client(client: AnyRedis) -> None:
    """Close ``client`` and, for Sentinel, the clients it opened to the sentinels."""
    try:
        await client.aclose()
    finally:
        # redis-py's Sentinel keeps one client per sentinel that closing the master
        # client leaves open.
        manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
        for sentinel_client in getattr(manager, "sentinels", ()):
            await sentinel_client.aclose()


async def _close_quietly(client: AnyRedis) -> None:
    # Already failing: the original error is the one worth reporting.
    with contextlib.suppress(Exception):
        await close_client(client)


@dataclass
class TopologyReport:
    """What ``chatscale doctor`` prints about the deployment."""

    topology: str
    server_version: str
    tls: bool
    prefix: str
    rtt_ms: float
    masters: list[str] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    slots_covered: int | None = None
    sentinel_master: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def describe(connection: RedisConnection, samples: int = 10) -> TopologyReport:
    """Inspect the deployment: nodes, roles, slot coverage, version, round trip."""
    client = connection.client
    rtts = sorted([await connection.ping() for _ in range(samples)])
    rtt_ms = rtts[len(rtts) // 2] * 1000
    report = TopologyReport(
        topology=connection.topology.value,
        server_version="?",
        tls=connection.config.tls is not None,
        prefix=connection.keys.prefix,
        rtt_ms=round(rtt_ms, 3),
    )
    if isinstance(client, RedisCluster):
        nodes = await client.execute_command("CLUSTER NODES", target_nodes=RedisCluster.RANDOM)
        covered = 0
        # redis-py parses CLUSTER NODES into {address: {"flags": ..., "slots": [[lo, hi]]}}.
        for address, node in sorted(nodes.items()):
            flags = str(node.get("flags", "")).split(",")
            suffix = " (fail)" if "fail" in flags else ""
            if "master" in flags:
                slots = node.get("slots", [])
                # Gossip is eventually consistent: a fresh replica can still look like an
                # empty master from another node's view.
                report.masters.append(address + suffix + ("" if slots else " (no slots)"))
                for slot_range in slots:
                    low, high = int(slot_range[0]), int(slot_range[-1])
                    covered += high - low + 1
            elif "slave" in flags:
                report.replicas.append(address + suffix)
        report.slots_covered = covered
        info = await client.info("server", target_nodes=RedisCluster.RANDOM)
        report.server_version = _text(info.get("redis_version", "?"))
        return report
    assert isinstance(client, Redis)
    info = await client.info("server")
    report.server_version = _text(info.get("redis_version", "?"))
    replication = await client.info("replication")
    pool = client.connection_pool
    host = getattr(pool, "connection_kwargs", {}).get("host")
    port = getattr(pool, "connection_kwargs", {}).get("port")
    if connection.topology is Topology.SENTINEL:
        address = await pool.get_master_address()  # type: ignore[attr-defined]
        report.sentinel_master = f"{address[0]}:{address[1]}"
        report.masters.append(report.sentinel_master)
    else:
        report.masters.append(f"{host}:{port}")
    for key, value in replication.items():
        if key.startswith("slave") and isinstance(value, dict):
            report.replicas.append(f"{value.get('ip')}:{value.get('port')}")
    report.extra["role"] = replication.get("role")
    return report
