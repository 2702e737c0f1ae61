"""redis-py's asyncio connection classes, packing their commands with
:func:`chatscale.redis.resp.pack_commands`.

redis-py builds every command in Python (:mod:`chatscale.redis.resp` says why that costs);
these classes override only its two packers, so every command the client sends (sessions,
caches, rate limits, stream reads, pub/sub, pipelines, on every topology) is packed in C
when the connection encodes text as strict UTF-8, with the same bytes and the same refusals
as redis-py's (tests/test_resp.py, tests/test_connections.py). :func:`packing` maps the
class redis-py would pick to its packing twin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from chatscale.redis.resp import pack_commands


class _Packing:
    """The two packers of a redis-py connection (it reads the connection's ``encoder``)."""

    encoder: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        """One command (a name and its arguments) as RESP, in one buffer."""
        return [pack_commands((args,), self.encoder)]

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        """Several commands (a pipeline) as RESP, in one buffer."""
        # redis-py's pipelines hand each command over as a tuple.
        return [pack_commands(cast(Iterable[Sequence[Any]], commands), self.encoder)]


class PackingConnection(_Packing, Connection):
    """A TCP connection (standalone, Cluster nodes)."""


class PackingSSLConnection(_Packing, SSLConnection):
    """A TLS connection (standalone, Cluster nodes)."""


class PackingSentinelConnection(_Packing, SentinelManagedConnection):
    """A connection to the master a Sentinel names."""


class PackingSentinelSSLConnection(_Packing, SentinelManagedSSLConnection):
    """A TLS connection to the master a Sentinel names."""


_C = TypeVar("_C", bound=AbstractConnection)

_TWINS: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: PackingConnection,
    SSLConnection: PackingSSLConnection,
    SentinelManagedConnection: PackingSentinelConnection,
    SentinelManagedSSLConnection: PackingSentinelSSLConnection,
}


def packing(connection_class: type[_C]) -> type[_C]:
    """The packing twin of redis-py's ``connection_class`` (itself when it has none, e.g. a
    class of the caller's own or one that packs already)."""
    return cast(type[_C], _TWINS.get(connection_class, connection_class))


def packing_class(*, tls: bool, sentinel: bool = False) -> type[AbstractConnection]:
    """The packing connection class of a standalone (or, with ``sentinel``, a
    Sentinel-managed) pool, over TLS or not."""
    if sentinel:
        return PackingSentinelSSLConnection if tls else PackingSentinelConnection
    return PackingSSLConnection if tls else PackingConnection


def pack_cluster(client: RedisCluster) -> None:
    """Make ``client``, not connected yet, build every node's connections with the packing
    twin of the class it picked (plain or TLS).

    redis-py's Cluster client takes no connection class: it picks one from ``ssl`` and keeps
    it in its ``connection_kwargs``, from which its nodes manager builds every node it
    discovers; the startup nodes were built from it already.
    """
    connection_class = packing(client.connection_kwargs["connection_class"])
    client.connection_kwargs["connection_class"] = connection_class
    for node in client.startup_nodes:
        node.connection_class = connection_class
