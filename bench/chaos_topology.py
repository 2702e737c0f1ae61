"""The Redis side of the fault checker: a topology started on loopback ports, its faults.

Each topology starts its own ``redis-server`` processes (``tests/harness``), tells the
instances where to connect, names the Redis nodes that hold data (for the key audit), and
lists the fault kinds that make sense on it. Standalone puts a :class:`FaultProxy` between
the instances and Redis, so network faults apply there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from bench.chaos_proxy import FaultProxy
from tests.harness.servers import (
    ClusterHandle,
    RedisServer,
    SentinelHandle,
    start_cluster,
    start_sentinel,
    start_standalone,
)

#: Faults of a chatscale instance (every topology).
INSTANCE_FAULTS = ("kill9", "sigstop", "sigterm")
#: A redeploy: every instance drained and restarted in turn (every topology). Drawn only
#: when named (``--faults rolling_restart``), so that earlier seeds replay as they were; use
#: it with ``--profile long``, whose answers outlive the whole roll.
ROLLING_RESTART = "rolling_restart"
#: Redis faults any topology supports (on its master).
REDIS_PAUSE = "redis_pause"
STANDALONE_FAULTS = (
    "redis_restart_keep",
    "redis_restart_lose",
    "redis_down",
    "proxy_latency",
    "proxy_reset",
    "proxy_blackhole",
)
SENTINEL_FAULTS = ("sentinel_failover",)
CLUSTER_FAULTS = ("cluster_master_kill",)
#: Faults after which Redis may have lost data on purpose (sessions, conversations, jobs).
DATA_LOSS_FAULTS = frozenset({"redis_restart_lose", "redis_down"})


def pause_process(pid: int | None, paused: bool) -> None:
    """SIGSTOP (``paused``) or SIGCONT a process; a process already gone is ignored."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP if paused else signal.SIGCONT)


class Topology(ABC):
    """A running Redis topology the instances use."""

    name: str

    @abstractmethod
    def redis_uri(self) -> str:
        """``REDIS_URI`` for the instances."""

    @abstractmethod
    def data_masters(self) -> list[RedisServer]:
        """The nodes that currently hold the data (one per shard), reached directly."""

    def fault_kinds(self) -> tuple[str, ...]:
        """Fault kinds this topology supports."""
        return (*INSTANCE_FAULTS, REDIS_PAUSE)

    def pause_master(self) -> int | None:
        """SIGSTOP the (first) master; its pid, for :func:`pause_process` ``(pid, False)``."""
        pid = self.data_masters()[0].pid
        pause_process(pid, True)
        return pid

    @abstractmethod
    def stop(self) -> None:
        """Stop every process of the topology."""

    async def aclose(self) -> None:  # noqa: B027 (only Standalone has something to close)
        """Release what needs the event loop (the proxy)."""


class Standalone(Topology):
    """One ``redis-server``; the instances reach it through a :class:`FaultProxy`."""

    name = "standalone"

    def __init__(self, workdir: Path) -> None:
        self.server = start_standalone(workdir / "redis")
        self.proxy = FaultProxy(self.server.port)

    async def start_proxy(self) -> None:
        """Listen (needs the running event loop)."""
        await self.proxy.start()

    def redis_uri(self) -> str:
        """Through the proxy."""
        return f"redis://127.0.0.1:{self.proxy.port}/0"

    def data_masters(self) -> list[RedisServer]:
        """The server itself (not through the proxy)."""
        return [self.server]

    def fault_kinds(self) -> tuple[str, ...]:
        """Instance faults, pause, restarts, outage and the proxy's network faults."""
        return (*super().fault_kinds(), *STANDALONE_FAULTS)

    def go_down(self, keep_data: bool) -> None:
        """Stop Redis: with ``keep_data`` by ``SHUTDOWN SAVE`` (every write it acknowledged
        is in the snapshot), else at once (SIGKILL) with no snapshot.

        ``SAVE`` then SIGKILL is no restart that keeps the data: the writes queued while
        ``SAVE`` blocked the server ran before the kill and were lost (seed 1011: three
        conversations created in that window were gone)."""
        dump = self.server.dir / "dump.rdb"
        if keep_data:
            self.server.cli("SHUTDOWN", "SAVE", check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.server.process is not None:
                    self.server.process.wait(timeout=10)
        else:
            dump.unlink(missing_ok=True)
        self.server.kill()

    def come_back(self) -> None:
        """Start Redis again on its port (loading the snapshot if one was saved)."""
        self.server.start()

    def stop(self) -> None:
        """Stop the server (SIGCONT first, in case it was paused)."""
        pause_process(self.server.pid, False)
        self.server.stop()

    async def aclose(self) -> None:
        """Close the proxy."""
        await self.proxy.close()


class Sentinel(Topology):
    """A master, a replica and three Sentinels; the instances ask the Sentinels."""

    name = "sentinel"
    replicas = 1
    min_replicas_to_write = 0

    def __init__(self, workdir: Path) -> None:
        self.handle: SentinelHandle = start_sentinel(
            workdir / "sentinel",
            replicas=self.replicas,
            min_replicas_to_write=self.min_replicas_to_write,
        )

    def redis_uri(self) -> str:
        """The Sentinel URI."""
        return self.handle.sentinel_url()

    def data_masters(self) -> list[RedisServer]:
        """The current master."""
        return [self.handle.master]

    def fault_kinds(self) -> tuple[str, ...]:
        """Instance faults, pause, and a Sentinel failover."""
        return (*super().fault_kinds(), *SENTINEL_FAULTS)

    def failover(self) -> None:
        """``SENTINEL FAILOVER`` and wait until the old master follows the new one."""
        self.handle.failover()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the Sentinels agree again (after a pause longer than down-after)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                _host, port = self.handle.master_address()
                if port != self.handle.master.port:
                    self.handle.wait_for_failover(max(1.0, deadline - time.monotonic()))
                self.handle.wait_until_ready(max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop Sentinels, then the data nodes."""
        for server in self.handle.all_servers:
            pause_process(server.pid, False)
        self.handle.stop()


class Cluster(Topology):
    """Three masters with a replica each."""

    name = "cluster"

    def __init__(self, workdir: Path) -> None:
        self.handle: ClusterHandle = start_cluster(workdir / "cluster")

    def redis_uri(self) -> str:
        """Every node, as a Cluster URI list."""
        return ",".join(self.handle.urls())

    def data_masters(self) -> list[RedisServer]:
        """The current masters."""
        return self.handle.masters()

    def fault_kinds(self) -> tuple[str, ...]:
        """Instance faults, pause, and a master killed (its replica takes over)."""
        return (*super().fault_kinds(), *CLUSTER_FAULTS)

    def kill_master(self, index: int) -> RedisServer:
        """SIGKILL the ``index``-th master (modulo their number); return it."""
        masters = self.handle.masters()
        return self.handle.kill_master(index % len(masters))

    def recover(self, victim: RedisServer | None, timeout: float = 30.0) -> None:
        """Wait for the failover, restart ``victim`` as a replica, wait until whole."""
        self.handle.wait_until_ok(timeout)
        if victim is not None:
            victim.start()
        self.handle.wait_until_ok(timeout, masters=3, replicas=3)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.handle.nodes:
            pause_process(node.pid, False)
        self.handle.stop()


class RecommendedSentinel(Sentinel):
    """The Sentinel deployment docs/deployment.md recommends: two replicas (here one is
    never promoted, so the failovers stay between the same two nodes) and
    ``min-replicas-to-write 1``, so that a master cut off from its replicas refuses writes."""

    name = "sentinel-ha"
    replicas = 2
    min_replicas_to_write = 1


def start_topology(name: str, workdir: Path) -> Topology:
    """Start the topology called ``name`` under ``workdir``."""
    kinds: dict[str, Callable[[Path], Topology]] = {
        "standalone": Standalone,
        "sentinel": Sentinel,
        "sentinel-ha": RecommendedSentinel,
        "cluster": Cluster,
    }
    if name not in kinds:
        raise ValueError(f"unknown topology {name!r}")
    return kinds[name](workdir)
