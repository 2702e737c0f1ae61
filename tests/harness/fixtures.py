"""pytest fixtures for real Redis topologies (see :mod:`tests.harness.servers`).

Load them from ``tests/conftest.py`` in either form::

    pytest_plugins = ["tests.harness.fixtures"]      # plugin form (preferred)

    from tests.harness.fixtures import *  # noqa: F403  # star-import form

Both need the repository root on ``sys.path``: pytest's default import mode
puts it there because ``tests/`` is a package (``tests/__init__.py``);
``python -m pytest`` from the root or ``pythonpath = ["."]`` also do.

Session-scoped topologies start lazily, the first time a test asks for them,
and are stopped at session end — also after failures and Ctrl-C (pytest runs
session finalizers then); an ``atexit`` hook and the parent-death signal kill
anything left over.  The ``*_factory`` fixtures make fresh, function-scoped
topologies for tests that break them (kill nodes, fail over...).

A fixture skips when ``redis-server``/``redis-cli``/``openssl`` is missing or
its topology cannot be started.  Set ``CHATSCALE_REQUIRE_REDIS=1`` (e.g. in
CI) to turn those skips into failures so that breakage cannot hide.  The same
variable applies to the PostgreSQL server of :func:`postgres_server` (Debian's
``postgresql`` package, which ``scripts/test`` installs).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn, Protocol, TypeVar

import pytest

from .postgres import PostgresServer, postgres_bin_dir, start_postgres
from .servers import (
    AclRedisServer,
    ClusterHandle,
    HarnessError,
    RedisServer,
    SentinelHandle,
    missing_tools,
    start_acl_server,
    start_cluster,
    start_sentinel,
    start_standalone,
)
from .tls import TLSError, TLSFiles, make_tls

__all__ = [
    "REQUIRE_ENV",
    "ClusterFactory",
    "SentinelFactory",
    "StandaloneFactory",
    "cluster_factory",
    "postgres_database",
    "postgres_server",
    "pytest_configure",
    "redis_acl",
    "redis_cluster",
    "redis_sentinel",
    "redis_standalone",
    "redis_tls",
    "sentinel_factory",
    "standalone_factory",
    "tls_files",
]

#: Environment variable: when set (not "0"), unavailable topologies fail.
REQUIRE_ENV = "CHATSCALE_REQUIRE_REDIS"

_REDIS_TOOLS = ("redis-server", "redis-cli")
_T = TypeVar("_T")


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker used by the topology tests."""
    config.addinivalue_line(
        "markers", "slow: starts or breaks real Redis topologies (runs by default)"
    )


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set)", pytrace=False)
    pytest.skip(reason)


def _start_or_skip(what: str, start: Callable[[], _T], tools: Sequence[str] = _REDIS_TOOLS) -> _T:
    missing = missing_tools(*tools)
    if missing:
        _unavailable(f"{what}: cannot start, {', '.join(missing)} not found on PATH")
    try:
        return start()
    except (HarnessError, TLSError) as exc:
        detail = str(exc)
        if len(detail) > 3000:
            detail = detail[:1500] + "\n[...]\n" + detail[-1500:]
        _unavailable(f"{what} could not be started: {detail}")


# --------------------------------------------------------------------------
# Session-scoped topologies
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A plain ``redis-server`` without auth, shared by the session."""
    server = _start_or_skip(
        "standalone redis-server",
        lambda: start_standalone(tmp_path_factory.mktemp("redis-standalone")),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """A 3-master / 3-replica cluster without auth, shared by the session.
    Do not break it: use :func:`cluster_factory` for that."""
    cluster = _start_or_skip(
        "redis cluster (3 masters, 3 replicas)",
        lambda: start_cluster(tmp_path_factory.mktemp("redis-cluster")),
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelHandle]:
    """Master + replica + 3 Sentinels (service ``mymaster``), no auth."""
    handle = _start_or_skip(
        "redis sentinel topology",
        lambda: start_sentinel(tmp_path_factory.mktemp("redis-sentinel")),
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """Throw-away CA, server and client certificates (plus an unrelated CA)."""
    return _start_or_skip(
        "TLS certificates",
        lambda: make_tls(tmp_path_factory.mktemp("tls")),
        tools=("openssl",),
    )


@pytest.fixture(scope="session")
def redis_tls(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles
) -> Iterator[RedisServer]:
    """A ``redis-server`` reachable only over TLS (``port`` is the TLS port;
    ``tls-auth-clients optional``: clients with or without a certificate from
    ``.tls.ca_cert`` are accepted, others rejected)."""
    server = _start_or_skip(
        "TLS redis-server",
        lambda: start_standalone(tmp_path_factory.mktemp("redis-tls"), tls=tls_files, name="tls"),
        tools=(*_REDIS_TOOLS, "openssl"),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_acl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedisServer]:
    """A ``redis-server`` whose default user needs a password and with an ACL
    user ``.acl_user``/``.acl_password`` confined to ``.acl_prefix + '::*'``
    keys and channels (see :func:`tests.harness.servers.app_acl_rules`)."""
    server = _start_or_skip(
        "ACL redis-server",
        lambda: start_acl_server(tmp_path_factory.mktemp("redis-acl")),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by the session (see :mod:`tests.harness.postgres`); tests
    take a fresh database of it with :func:`postgres_database`."""
    if postgres_bin_dir() is None:
        _unavailable("PostgreSQL: cannot start, Debian's postgresql package is not installed")
    server = _start_or_skip("PostgreSQL", start_postgres, tools=())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """The URL (``postgresql+asyncpg://``) of a new, empty database for this test."""
    return postgres_server.create_database()


# --------------------------------------------------------------------------
# Function-scoped factories
# --------------------------------------------------------------------------


class StandaloneFactory(Protocol):
    """Creates a fresh standalone server, stopped at the end of the test."""

    def __call__(
        self,
        *,
        password: str | None = None,
        acl_file_lines: list[str] | None = None,
        tls: TLSFiles | None = None,
        tls_port_only: bool = True,
        tls_auth_clients: str = "optional",
        extra_args: Sequence[str] = (),
    ) -> RedisServer: ...


class ClusterFactory(Protocol):
    """Creates a fresh cluster, stopped at the end of the test."""

    def __call__(
        self,
        *,
        masters: int = 3,
        replicas_per_master: int = 1,
        password: str | None = None,
        node_timeout_ms: int = 1500,
    ) -> ClusterHandle: ...


class SentinelFactory(Protocol):
    """Creates a fresh Sentinel topology, stopped at the end of the test."""

    def __call__(
        self,
        *,
        password: str | None = None,
        sentinels: int = 3,
        replicas: int = 1,
        service_name: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> SentinelHandle: ...


@pytest.fixture
def standalone_factory(tmp_path: Path) -> Iterator[StandaloneFactory]:
    """Factory for throw-away standalone servers in ``tmp_path``."""
    created: list[RedisServer] = []
    counter = itertools.count()

    def make(
        *,
        password: str | None = None,
        acl_file_lines: list[str] | None = None,
        tls: TLSFiles | None = None,
        tls_port_only: bool = True,
        tls_auth_clients: str = "optional",
        extra_args: Sequence[str] = (),
    ) -> RedisServer:
        base = tmp_path / f"standalone-{next(counter)}"
        server = _start_or_skip(
            "standalone redis-server",
            lambda: start_standalone(
                base,
                password=password,
                acl_file_lines=acl_file_lines,
                tls=tls,
                tls_port_only=tls_port_only,
                tls_auth_clients=tls_auth_clients,
                extra_args=extra_args,
            ),
        )
        created.append(server)
        return server

    try:
        yield make
    finally:
        for server in reversed(created):
            server.stop()


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Factory for throw-away clusters in ``tmp_path``."""
    created: list[ClusterHandle] = []
    counter = itertools.count()

    def make(
        *,
        masters: int = 3,
        replicas_per_master: int = 1,
        password: str | None = None,
        node_timeout_ms: int = 1500,
    ) -> ClusterHandle:
        base = tmp_path / f"cluster-{next(counter)}"
        cluster = _start_or_skip(
            f"redis cluster ({masters} masters, {replicas_per_master} replicas each)",
            lambda: start_cluster(
                base,
                masters=masters,
                replicas_per_master=replicas_per_master,
                password=password,
                node_timeout_ms=node_timeout_ms,
            ),
        )
        created.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in reversed(created):
            cluster.stop()


@pytest.fixture
def sentinel_factory(tmp_path: Path) -> Iterator[SentinelFactory]:
    """Factory for throw-away Sentinel topologies in ``tmp_path``."""
    created: list[SentinelHandle] = []
    counter = itertools.count()

    def make(
        *,
        password: str | None = None,
        sentinels: int = 3,
        replicas: int = 1,
        service_name: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> SentinelHandle:
        base = tmp_path / f"sentinel-{next(counter)}"
        handle = _start_or_skip(
            "redis sentinel topology",
            lambda: start_sentinel(
                base,
                password=password,
                sentinels=sentinels,
                replicas=replicas,
                service_name=service_name,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            ),
        )
        created.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in reversed(created):
            handle.stop()
