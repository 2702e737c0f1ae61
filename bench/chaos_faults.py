"""Faults of the checker: drawn from a seeded generator, injected, healed, timed.

A :class:`Fault` is drawn entirely from the schedule's ``random.Random`` (kind, start time,
duration, target, parameter), so a seed replays the same faults. :class:`FaultRunner` injects
one, holds it, heals it (restarting what it stopped), and measures the *recovery time*: from
the heal until every running instance answers ``/readyz`` 200 again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from bench.chaos_instances import Instance
from bench.chaos_topology import (
    DATA_LOSS_FAULTS,
    INSTANCE_FAULTS,
    ROLLING_RESTART,
    Cluster,
    Sentinel,
    Standalone,
    Topology,
    pause_process,
)
from tests.harness.servers import RedisServer

#: Base durations (seconds) of each fault kind, multiplied by the profile's scale.
DURATIONS: dict[str, tuple[float, float]] = {
    "kill9": (0.5, 3.0),  # dead before the restart
    "sigstop": (1.0, 3.0),
    "sigterm": (0.0, 0.0),
    "rolling_restart": (0.0, 0.0),
    "redis_pause": (0.5, 3.0),
    "redis_restart_keep": (0.0, 0.0),
    "redis_restart_lose": (0.0, 0.0),
    "redis_down": (1.0, 4.0),
    "proxy_latency": (1.0, 4.0),
    "proxy_reset": (0.0, 1.0),  # new connections refused for that long
    "proxy_blackhole": (1.0, 4.0),
    "sentinel_failover": (0.0, 0.0),
    "cluster_master_kill": (0.0, 0.0),
}
RECOVERY_TIMEOUT_S = 60.0
DRAIN_WAIT_S = 20.0


@dataclass
class Fault:
    """One fault of a schedule, and what happened when it ran."""

    kind: str
    at_s: float
    duration_s: float
    target: int
    param: float = 0.0
    victims: list[str] = field(default_factory=list)
    #: When the heal began (restart, SIGCONT, proxy healed...), for the recovery time.
    healing_at: float = 0.0
    recovery_s: float | None = None
    error: str = ""

    @property
    def loses_data(self) -> bool:
        """Redis forgets its data on purpose (sessions and conversations are gone)."""
        return self.kind in DATA_LOSS_FAULTS

    def label(self) -> str:
        """``kind@start(+duration)[target]`` for the schedule line."""
        text = f"{self.kind}@{self.at_s:.1f}s"
        if self.duration_s:
            text += f"+{self.duration_s:.1f}s"
        if self.kind in INSTANCE_FAULTS:
            text += f"[i{self.target}]"
        if self.kind == ROLLING_RESTART:
            text += f"[from i{self.target}]"
        if self.kind == "proxy_latency":
            text += f"[{self.param * 1000:.0f}ms]"
        return text

    def as_json(self) -> dict[str, Any]:
        """For the JSON report."""
        return {
            "kind": self.kind,
            "at_s": round(self.at_s, 2),
            "duration_s": round(self.duration_s, 2),
            "target": self.target,
            "param": round(self.param, 3),
            "victims": self.victims,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
            "error": self.error,
        }


def draw_faults(
    rng: random.Random,
    kinds: tuple[str, ...],
    count: int,
    mixed: bool,
    window_s: tuple[float, float],
    scale: float,
    instances: int,
) -> list[Fault]:
    """``count`` faults (one kind unless ``mixed``), starting within ``window_s``."""
    first = rng.choice(kinds)
    faults: list[Fault] = []
    for _ in range(count):
        kind = rng.choice(kinds) if mixed else first
        low, high = DURATIONS[kind]
        faults.append(
            Fault(
                kind=kind,
                at_s=rng.uniform(*window_s),
                duration_s=rng.uniform(low, high) * scale,
                target=rng.randrange(instances),
                param=rng.uniform(0.05, 0.5),
            )
        )
    return sorted(faults, key=lambda f: f.at_s)


class FaultRunner:
    """Injects faults into the instances and the topology of one run."""

    def __init__(
        self,
        topology: Topology,
        instances: list[Instance],
        scrape: Callable[[Instance], Awaitable[None]],
    ) -> None:
        self.topology = topology
        self.instances = instances
        self.scrape = scrape
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def run(self, fault: Fault, began: float) -> None:
        """Wait for the fault's start, inject it, hold, heal, measure recovery."""
        await asyncio.sleep(max(0.0, began + fault.at_s - time.monotonic()))
        if fault.kind == ROLLING_RESTART:
            target = "instances"
        else:
            target = f"instance{fault.target}" if fault.kind in INSTANCE_FAULTS else "redis"
        async with self._lock(target):
            try:
                await self._inject(fault)
            except Exception as exc:  # a harness failure: reported, never hidden
                fault.error = f"{type(exc).__name__}: {exc}"
            healing_at = fault.healing_at or time.monotonic()
            if await self._wait_ready():
                fault.recovery_s = time.monotonic() - healing_at
            # After the measurement: the topology's own settling (the harness waiting for
            # the Sentinels to agree) is not the instances' recovery.
            await self._settle(fault)

    async def _settle(self, fault: Fault) -> None:
        """Wait (bounded) until the topology is whole again after ``fault``."""
        if fault.kind != "redis_pause":
            return
        if isinstance(self.topology, Sentinel):
            await asyncio.to_thread(self.topology.settle)
        if isinstance(self.topology, Cluster):
            await asyncio.to_thread(self.topology.recover, None)

    async def _inject(self, fault: Fault) -> None:
        handlers: dict[str, Callable[[Fault], Awaitable[None]]] = {
            "kill9": self._kill9,
            "sigstop": self._sigstop,
            "sigterm": self._sigterm,
            "rolling_restart": self._rolling_restart,
            "redis_pause": self._redis_pause,
            "redis_restart_keep": self._redis_restart,
            "redis_restart_lose": self._redis_restart,
            "redis_down": self._redis_down,
            "proxy_latency": self._proxy_latency,
            "proxy_reset": self._proxy_reset,
            "proxy_blackhole": self._proxy_blackhole,
            "sentinel_failover": self._sentinel_failover,
            "cluster_master_kill": self._cluster_master_kill,
        }
        await handlers[fault.kind](fault)

    # -- instances ----------------------------------------------------------------------

    def _victim(self, fault: Fault) -> Instance | None:
        instance = self.instances[fault.target]
        current = instance.current
        if instance.pid is None or current is None:
            fault.error = "instance not running"
            return None
        fault.victims.append(current.instance_id)
        return instance

    async def _kill9(self, fault: Fault) -> None:
        instance = self._victim(fault)
        if instance is None:
            return
        await self.scrape(instance)
        instance.kill()
        await asyncio.sleep(fault.duration_s)
        fault.healing_at = time.monotonic()
        await asyncio.to_thread(instance.start)

    async def _sigstop(self, fault: Fault) -> None:
        instance = self._victim(fault)
        if instance is None:
            return
        await self.scrape(instance)
        instance.pause()
        try:
            await asyncio.sleep(fault.duration_s)
        finally:
            instance.resume()

    async def _sigterm(self, fault: Fault) -> None:
        instance = self._victim(fault)
        if instance is None:
            return
        await self.scrape(instance)
        fault.healing_at = time.monotonic()
        code = await asyncio.to_thread(instance.terminate, DRAIN_WAIT_S)
        if code != 0:
            fault.error = f"drained instance exited with {code}"
        await asyncio.to_thread(instance.start)

    async def _rolling_restart(self, fault: Fault) -> None:
        # A hasty redeploy: each instance drained (SIGTERM, its answers handed over), the
        # next one drained as soon as the previous has exited, while that one starts again.
        # Answers handed over are then claimed while their claimants drain in turn. (CI
        # once lost an answer so: a draining instance's reaper claimed one and ended it with
        # an error.)
        count = len(self.instances)
        restarts: list[asyncio.Future[Any]] = []
        try:
            for step in range(count):
                instance = self.instances[(fault.target + step) % count]
                current = instance.current
                if instance.pid is None or current is None:
                    continue
                fault.victims.append(current.instance_id)
                await self.scrape(instance)
                code = await asyncio.to_thread(instance.terminate, DRAIN_WAIT_S)
                if code != 0:
                    fault.error = f"drained instance exited with {code}"
                restarts.append(asyncio.ensure_future(asyncio.to_thread(instance.start)))
        finally:
            await asyncio.gather(*restarts)
        fault.healing_at = time.monotonic()

    # -- Redis --------------------------------------------------------------------------

    async def _redis_pause(self, fault: Fault) -> None:
        pid = await asyncio.to_thread(self.topology.pause_master)
        try:
            await asyncio.sleep(fault.duration_s)
        finally:
            pause_process(pid, False)
        fault.healing_at = time.monotonic()

    def _standalone(self) -> Standalone:
        if not isinstance(self.topology, Standalone):
            raise TypeError(f"not a standalone topology: {self.topology.name}")
        return self.topology

    async def _redis_restart(self, fault: Fault) -> None:
        topology = self._standalone()
        await asyncio.to_thread(topology.go_down, fault.kind == "redis_restart_keep")
        fault.healing_at = time.monotonic()
        await asyncio.to_thread(topology.come_back)

    async def _redis_down(self, fault: Fault) -> None:
        topology = self._standalone()
        await asyncio.to_thread(topology.go_down, True)
        await asyncio.sleep(fault.duration_s)
        fault.healing_at = time.monotonic()
        await asyncio.to_thread(topology.come_back)

    async def _proxy_latency(self, fault: Fault) -> None:
        proxy = self._standalone().proxy
        proxy.set_latency(fault.param)
        try:
            await asyncio.sleep(fault.duration_s)
        finally:
            proxy.heal()

    async def _proxy_reset(self, fault: Fault) -> None:
        proxy = self._standalone().proxy
        proxy.reset(hold=fault.duration_s)
        await asyncio.sleep(fault.duration_s)
        proxy.heal()

    async def _proxy_blackhole(self, fault: Fault) -> None:
        proxy = self._standalone().proxy
        proxy.blackhole(True)
        try:
            await asyncio.sleep(fault.duration_s)
        finally:
            proxy.heal()

    async def _sentinel_failover(self, fault: Fault) -> None:
        if not isinstance(self.topology, Sentinel):
            raise TypeError("sentinel_failover needs Sentinel")
        fault.healing_at = time.monotonic()
        await asyncio.to_thread(self.topology.failover)

    async def _cluster_master_kill(self, fault: Fault) -> None:
        if not isinstance(self.topology, Cluster):
            raise TypeError("cluster_master_kill needs a Cluster")
        victim: RedisServer = await asyncio.to_thread(self.topology.kill_master, fault.target)
        fault.healing_at = time.monotonic()
        await asyncio.to_thread(self.topology.recover, victim)

    # -- recovery -----------------------------------------------------------------------

    async def _wait_ready(self) -> bool:
        """Every running instance answers /readyz 200 (bounded)."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if await self._all_ready(client):
                    return True
                await asyncio.sleep(0.05)
        return False

    async def _all_ready(self, client: httpx.AsyncClient) -> bool:
        for instance in self.instances:
            if instance.pid is None:
                continue
            try:
                if (await client.get(f"{instance.url}/readyz")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
        return True
