"""ElastiCache-style Cluster over TLS: nodes announce hostnames and present certificates
valid for those names only. The client must reach every node, and check its certificate,
by the name the cluster announces (what ioredis's ``dnsLookup: (a, cb) => cb(null, a)``
achieves), with REDIS_USE_ALTERNATIVE_DNS_LOOKUP on or off."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chatscale.config import load_settings
from chatscale.redis import connect, describe
from tests.conftest import redis_config, unique_prefix
from tests.harness.fixtures import _start_or_skip
from tests.harness.hostname_cluster import loopback_names, node_name, start_hostname_cluster
from tests.harness.servers import ClusterHandle
from tests.server.helpers import ServerThread, read_events, text_of
from tests.test_redis_topologies import exercise

MASTERS = 3


@pytest.fixture(scope="module")
def hostname_cluster(
    tmp_path_factory: pytest.TempPathFactory, tls_files: Any
) -> Iterator[ClusterHandle]:
    """Three TLS masters announcing ``node-<i>.chatscale.test`` (resolved to 127.0.0.1 in
    this process while the module runs)."""
    with loopback_names([node_name(i) for i in range(MASTERS)]):
        cluster = _start_or_skip(
            "TLS cluster announcing hostnames",
            lambda: start_hostname_cluster(
                tmp_path_factory.mktemp("hostname-cluster"), tls_files, masters=MASTERS
            ),
            tools=("redis-server", "openssl"),
        )
        try:
            yield cluster
        finally:
            cluster.stop()


def test_the_certificates_name_only_the_announced_hosts(hostname_cluster: ClusterHandle) -> None:
    """The premise: reaching a node under another node's name (what remapping announced
    addresses onto the configuration endpoint's host does) fails verification."""
    first, second = hostname_cluster.nodes[0], hostname_cluster.nodes[1]
    assert first.tls is not None
    context = ssl.create_default_context(cafile=str(first.tls.ca_cert))
    with socket.create_connection(("127.0.0.1", second.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)hostname"):
            context.wrap_socket(raw, server_hostname=first.host)
    with socket.create_connection(("127.0.0.1", second.port), timeout=5) as raw:
        context.wrap_socket(raw, server_hostname=second.host).close()


@pytest.mark.parametrize("alternative_dns_lookup", [True, False])
async def test_every_node_is_reached_by_its_announced_hostname(
    hostname_cluster: ClusterHandle, alternative_dns_lookup: bool
) -> None:
    seed = hostname_cluster.nodes[0]
    assert seed.tls is not None
    config = redis_config(
        f"rediss://{seed.host}:{seed.port}",  # one configuration endpoint, as on ElastiCache
        prefix=unique_prefix(),
        use_redis_cluster=True,
        redis_ca=str(seed.tls.ca_cert),
        redis_use_alternative_dns_lookup=alternative_dns_lookup,
        redis_connect_timeout=3000,
        redis_retry_max_attempts=1,
    )
    connection = await connect(config)
    try:
        client: Any = connection.client
        known = {(node.host, node.port) for node in client.get_nodes()}
        assert known == {(node.host, node.port) for node in hostname_cluster.nodes}
        await exercise(connection)  # keys on every master, pub/sub, Lua, pipelines
        report = await describe(connection)
        assert report.tls and report.slots_covered == 16384
        assert len([m for m in report.masters if "(no slots)" not in m]) == MASTERS
    finally:
        await connection.close()


async def test_the_server_answers_on_the_hostname_cluster(hostname_cluster: ClusterHandle) -> None:
    """The whole server (sessions, limits, streams, conversations) on that cluster."""
    seed = hostname_cluster.nodes[0]
    assert seed.tls is not None
    settings = load_settings(
        use_redis=True,
        redis_uri=f"rediss://{seed.host}:{seed.port}",
        use_redis_cluster=True,
        redis_ca=str(seed.tls.ca_cert),
        redis_use_alternative_dns_lookup=True,
        redis_key_prefix=unique_prefix(),
        session_secret="s" * 48,
        demo_tokens_per_second=1000,
        demo_response_tokens=20,
    )
    # The asyncio loop: uvloop resolves names itself, past the test resolver.
    with ServerThread(settings, loop="asyncio") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = await client.post("/api/chat", json={"message": "hi"})
            assert started.status_code == 202, started.text
            stream_id = started.json()["stream_id"]
            events = await read_events(client, f"/api/chat/stream/{stream_id}")
            assert events[-1].event == "done" and text_of(events)
