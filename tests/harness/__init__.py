"""Real-Redis test harness: ``redis-server`` / Sentinel / Cluster processes on
free loopback ports in temporary folders (no fakes, no mocks).

* :mod:`tests.harness.servers` — process management, importable without pytest.
* :mod:`tests.harness.tls` — throw-away CA and certificates via ``openssl``.
* :mod:`tests.harness.fixtures` — pytest fixtures built on the above.
"""

from .servers import (
    AclRedisServer,
    ClusterHandle,
    HarnessError,
    RedisServer,
    SentinelHandle,
    ToolMissingError,
    app_acl_rules,
    free_port,
    start_acl_server,
    start_cluster,
    start_sentinel,
    start_standalone,
    stop_all,
)
from .tls import TLSError, TLSFiles, make_tls

__all__ = [
    "AclRedisServer",
    "ClusterHandle",
    "HarnessError",
    "RedisServer",
    "SentinelHandle",
    "TLSError",
    "TLSFiles",
    "ToolMissingError",
    "app_acl_rules",
    "free_port",
    "make_tls",
    "start_acl_server",
    "start_cluster",
    "start_sentinel",
    "start_standalone",
    "stop_all",
]
