"""A TLS Redis Cluster that announces its nodes by hostname, as ElastiCache does.

Each node announces ``node-<i>.chatscale.test`` (``cluster-announce-hostname`` with
``cluster-preferred-endpoint-type hostname``) and presents a certificate valid for that
name only. Those names resolve to 127.0.0.1 inside this process only, while
:func:`loopback_names` is active (``*.localhost`` names do not resolve on every machine, and
nothing here edits ``/etc/hosts``): nothing but 127.0.0.1 is ever bound or connected to.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Collection, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from .servers import (
    CLUSTER_SLOTS,
    LOOPBACK,
    ClusterHandle,
    HarnessError,
    RedisServer,
    _data_directives,
    _start_all,
    free_port,
    stop_all,
)
from .tls import TLSFiles, make_host_cert

DOMAIN = "chatscale.test"


def node_name(index: int) -> str:
    """The hostname node ``index`` announces (and its certificate names)."""
    return f"node-{index}.{DOMAIN}"


@contextlib.contextmanager
def loopback_names(names: Collection[str]) -> Iterator[None]:
    """While active, ``names`` resolve to 127.0.0.1 in this process (``socket.getaddrinfo``,
    which blocking sockets and asyncio both use); every other name resolves as usual."""
    wanted = {name.lower() for name in names}
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        text = host.decode() if isinstance(host, bytes) else host
        if isinstance(text, str) and text.lower() in wanted:
            host = LOOPBACK
        return original(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = original


def start_hostname_cluster(
    base_dir: Path, tls: TLSFiles, *, masters: int = 3, node_timeout_ms: int = 1500
) -> ClusterHandle:
    """Start ``masters`` TLS-only cluster nodes (no replicas) announcing hostnames, give
    each an equal share of the slots and wait until the cluster is ok.

    Call it inside :func:`loopback_names` for the names :func:`node_name` gives: the
    harness reaches the nodes by those names too (their certificates name nothing else).
    """
    nodes: list[RedisServer] = []
    for index in range(masters):
        name = node_name(index)
        directory = Path(base_dir) / f"node-{index}"
        cert, key = make_host_cert(tls, name)
        directives = _data_directives(directory, None)
        directives += [
            ("cluster-enabled", "yes"),
            ("cluster-config-file", str(directory / "nodes.conf")),
            ("cluster-node-timeout", str(node_timeout_ms)),
            ("tls-cluster", "yes"),
            ("tls-replication", "yes"),
            ("cluster-announce-hostname", name),
            ("cluster-preferred-endpoint-type", "hostname"),
        ]
        nodes.append(
            RedisServer(
                host=name,
                port=free_port(cluster_bus=True),
                dir=directory,
                tls=replace(tls, server_cert=cert, server_key=key),
                name=f"hostname-cluster-node-{index}",
                directives=directives,
                cluster_bus=True,
            )
        )
    handle = ClusterHandle(nodes=nodes, node_timeout_ms=node_timeout_ms)
    try:
        _start_all(nodes)
        share = CLUSTER_SLOTS // masters
        for index, node in enumerate(nodes):
            low = index * share
            high = CLUSTER_SLOTS - 1 if index == masters - 1 else low + share - 1
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
                if index:
                    # The cluster bus meets by address; clients get the hostnames.
                    client.execute_command("CLUSTER", "MEET", LOOPBACK, nodes[0].port)
        handle.wait_until_ok(masters=masters, replicas=0)
    except BaseException:
        stop_all(nodes)
        raise
    if not all(node.running for node in nodes):
        raise HarnessError("a hostname cluster node stopped during start-up")
    return handle
