"""The fault checker: answers that survive faults, end to end.

Starts a Redis topology (standalone behind a misbehaving TCP proxy, Sentinel, or Cluster) and
``--instances`` real ``chatscale serve`` processes on loopback ports, all running the
``chaos`` model (random text that differs on every instance and attempt). Then, for each
schedule, it starts ``--chats`` chats whose clients hop between instances at random, injects
a seeded random list of faults (kill -9, SIGSTOP, SIGTERM of an instance; Redis paused,
restarted with or without its data, gone for a while; latency, resets and black holes on
the proxy; a Sentinel failover; a Cluster master killed), heals them, and checks every chat
end to end (``bench/chaos_client.py``), the takeovers (none without a fault of the owner),
and the tokens generated against the tokens answered (waste). After the schedules it lists
Redis keys without a TTL and compares memory and connections with the start.

    .venv/bin/python bench/chaos.py --topology standalone --schedules 5
    .venv/bin/python bench/chaos.py --topology all --profile long --schedules 20 --seed 7
    .venv/bin/python bench/chaos.py --topology standalone --seed 1003 --schedules 1   # replay

Schedule ``i`` uses seed ``--seed + i``, printed on its line with the command that replays it.
Prints one line per schedule, a summary table, and writes
``bench/results/chaos-<topology>-<seed>.json`` (``--out`` for another directory). Exit status
1 when an end-to-end anomaly was found. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from bench.chaos_client import ChatClient, ChatResult  # noqa: E402
from bench.chaos_faults import FaultRunner, draw_faults  # noqa: E402
from bench.chaos_instances import (  # noqa: E402
    Instance,
    instance_env,
    new_instances,
    start_all,
)
from bench.chaos_report import (  # noqa: E402
    E2E_KINDS,
    ScheduleResult,
    format_table,
    keys_without_ttl,
    redis_clients,
    summary_rows,
    unexpected_keys,
)
from bench.chaos_topology import (  # noqa: E402
    CLUSTER_FAULTS,
    INSTANCE_FAULTS,
    REDIS_PAUSE,
    ROLLING_RESTART,
    SENTINEL_FAULTS,
    STANDALONE_FAULTS,
    Standalone,
    Topology,
    start_topology,
)
from bench.http_client import commit  # noqa: E402
from tests.harness.servers import kill_all_children  # noqa: E402

TOPOLOGIES = ("standalone", "sentinel", "cluster")
#: Topologies run only when named (not by ``--topology all``).
EXTRA_TOPOLOGIES = ("sentinel-ha",)
SCRAPE_EVERY_S = 0.5
SETTLE_S = 1.0


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of a run."""

    name: str
    tokens: int
    tokens_per_s: float
    chats: int
    faults: tuple[int, int]
    mixed: bool
    scale: float
    window_s: tuple[float, float]
    stagger_s: float
    chat_deadline_s: float
    reconnect_s: tuple[float, float]


PROFILES = {
    "short": Profile("short", 80, 25.0, 6, (1, 1), False, 1.0, (0.8, 2.5), 1.0, 60.0, (0.3, 1.5)),
    "long": Profile("long", 300, 25.0, 12, (2, 4), True, 2.5, (1.0, 10.0), 3.0, 180.0, (0.3, 3.0)),
}


@dataclass(frozen=True)
class Options:
    """Command-line options."""

    topologies: tuple[str, ...]
    instances: int
    schedules: int
    chats: int
    profile: Profile
    seed: int
    faults: tuple[str, ...]
    out: Path
    keep: bool

    def replay(self, topology: str, seed: int) -> str:
        """The arguments that replay one schedule."""
        text = (
            f"--topology {topology} --instances {self.instances} --profile {self.profile.name} "
            f"--chats {self.chats} --seed {seed} --schedules 1"
        )
        return text + (f" --faults {','.join(self.faults)}" if self.faults else "")


class Run:
    """One topology with its instances, running schedule after schedule."""

    def __init__(self, topology: Topology, instances: list[Instance], options: Options) -> None:
        self.topology = topology
        self.instances = instances
        self.options = options
        self.http = httpx.AsyncClient(timeout=2.0)
        self.faults = FaultRunner(topology, instances, self.scrape)
        self._scraper: asyncio.Task[None] | None = None

    # -- observation --------------------------------------------------------------------

    async def scrape(self, instance: Instance) -> None:
        """Read one instance's counters now."""
        await instance.scrape(self.http)

    async def scrape_all(self) -> None:
        """Read every instance's counters."""
        await asyncio.gather(*(self.scrape(i) for i in self.instances))

    async def _scrape_forever(self) -> None:
        while True:
            await self.scrape_all()
            await asyncio.sleep(SCRAPE_EVERY_S)

    def start_scraping(self) -> None:
        """Scrape in the background until :meth:`close`."""
        self._scraper = asyncio.create_task(self._scrape_forever())

    def tokens(self) -> int:
        """Tokens generated by every incarnation of every instance."""
        return sum(i.tokens() for i in self.instances)

    def takeovers(self) -> int:
        """Takeovers counted by every incarnation of every instance."""
        return sum(i.takeovers() for i in self.instances)

    def urls(self) -> list[str]:
        """Every instance (dead ones too: a client that picks one retries elsewhere)."""
        return [i.url for i in self.instances]

    async def snapshot(self) -> dict[str, Any]:
        """RSS, sockets and incarnation of each instance; Redis clients."""
        per_instance = []
        for instance in self.instances:
            stats = instance.proc_stats()
            per_instance.append(
                {
                    "instance": instance.index,
                    "incarnations": len(instance.incarnations),
                    "rss_kb": stats.rss_kb if stats else None,
                    "sockets": stats.sockets if stats else None,
                }
            )
        masters = self.topology.data_masters()
        clients = await asyncio.to_thread(redis_clients, masters)
        return {"instances": per_instance, "redis_clients": clients}

    # -- schedules ----------------------------------------------------------------------

    async def chat(self, index: int, rng: random.Random, delay: float) -> ChatResult:
        """One checked chat, started after ``delay`` seconds."""
        await asyncio.sleep(delay)
        profile = self.options.profile
        client = ChatClient(index, self.urls, rng, profile.chat_deadline_s, profile.reconnect_s)
        return await client.run()

    async def schedule(self, index: int, seed: int) -> ScheduleResult:
        """Run one schedule: chats, faults, then the per-schedule observations."""
        options, profile = self.options, self.options.profile
        rng = random.Random(seed)
        kinds = options.faults or self.topology.fault_kinds()
        count = rng.randint(*profile.faults)
        faults = draw_faults(
            rng, kinds, count, profile.mixed, profile.window_s, profile.scale, len(self.instances)
        )
        chat_rngs = [random.Random(rng.getrandbits(64)) for _ in range(options.chats)]
        offsets = [i.log_size() for i in self.instances]
        await self.scrape_all()
        tokens, takeovers = self.tokens(), self.takeovers()
        began = time.monotonic()
        stagger = profile.stagger_s / max(1, options.chats)
        chats = [self.chat(i, r, i * stagger) for i, r in enumerate(chat_rngs)]
        fault_tasks = [asyncio.create_task(self.faults.run(f, began)) for f in faults]
        results = await asyncio.gather(*chats)
        await asyncio.gather(*fault_tasks)
        await asyncio.sleep(SETTLE_S)
        await self.scrape_all()
        result = ScheduleResult(self.topology.name, index, seed, faults, list(results))
        result.wall_s = time.monotonic() - began
        result.tokens_generated = self.tokens() - tokens
        result.takeovers_metric = self.takeovers() - takeovers
        for instance, offset in zip(self.instances, offsets, strict=True):
            result.takeovers += instance.takeovers_logged(offset)
        return result

    async def warm_up(self) -> None:
        """One chat without faults, so pools and caches exist before the first snapshot."""
        profile = self.options.profile
        client = ChatClient(-1, self.urls, random.Random(0), profile.chat_deadline_s, (9.0, 9.0))
        await client.run()

    async def close(self) -> None:
        """Stop scraping."""
        if self._scraper is not None:
            self._scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scraper
        await self.http.aclose()


# -- one topology -------------------------------------------------------------------------


async def run_topology(name: str, options: Options) -> dict[str, Any]:
    """Start ``name`` and the instances, run every schedule, audit, stop everything."""
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
    prefix = f"chaos{uuid.uuid4().hex[:8]}"
    topology: Topology | None = None
    instances: list[Instance] = []
    run: Run | None = None
    report: dict[str, Any] = {"topology": name, "workdir": str(workdir), "prefix": prefix}
    try:
        topology = await asyncio.to_thread(start_topology, name, workdir)
        if isinstance(topology, Standalone):
            await topology.start_proxy()
        profile = options.profile
        env = instance_env(topology.redis_uri(), prefix, profile.tokens, profile.tokens_per_s)
        instances = new_instances(options.instances, env, workdir)
        await start_all(instances)
        run = Run(topology, instances, options)
        run.start_scraping()
        await run.warm_up()
        report["before"] = await run.snapshot()
        report["schedules"] = await _schedules(run, name, options)
        report["after"] = await run.snapshot()
        masters = topology.data_masters()
        found = await asyncio.to_thread(keys_without_ttl, masters, prefix)
        report["keys_without_ttl"] = found
        report["unexpected_keys_without_ttl"] = unexpected_keys(found)
    finally:
        await _stop(run, instances, topology)
    return report


async def _schedules(run: Run, name: str, options: Options) -> list[ScheduleResult]:
    results: list[ScheduleResult] = []
    for index in range(options.schedules):
        seed = options.seed + index
        result = await run.schedule(index, seed)
        print(result.line(options.replay(name, seed)), flush=True)
        for chat in result.chats:
            for kind, detail in chat.anomalies:
                print(f"    chat {chat.index} {chat.stream_id}: {kind}: {detail}", flush=True)
        for takeover in result.needless():
            print(f"    needless takeover: {takeover}", flush=True)
        for fault in result.faults:
            if fault.error:
                print(f"    fault {fault.label()} failed: {fault.error}", flush=True)
        results.append(result)
    return results


async def _stop(run: Run | None, instances: list[Instance], topology: Topology | None) -> None:
    """Stop everything this run started, whatever state it is in."""
    if run is not None:
        await run.close()
    for instance in instances:
        with contextlib.suppress(Exception):
            instance.kill()
    if topology is not None:
        with contextlib.suppress(Exception):
            await topology.aclose()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(topology.stop)
    kill_all_children()


# -- reporting ----------------------------------------------------------------------------


def _print_topology(report: dict[str, Any], results: list[ScheduleResult]) -> None:
    print(f"\n== {report['topology']}: {len(results)} schedules ==")
    print(format_table(summary_rows(results)))
    unexpected = report.get("unexpected_keys_without_ttl", {})
    print(f"keys without TTL (besides singletons): {len(unexpected)} shapes")
    for shape, entry in unexpected.items():
        print(f"    {shape}: {entry['count']} (e.g. {entry['example']})")
    before, after = report.get("before", {}), report.get("after", {})
    for b, a in zip(before.get("instances", []), after.get("instances", []), strict=False):
        restarted = " (restarted)" if a["incarnations"] != b["incarnations"] else ""
        print(
            f"instance {b['instance']}: rss {_kb(b['rss_kb'])} -> {_kb(a['rss_kb'])}, "
            f"sockets {b['sockets']} -> {a['sockets']}{restarted}"
        )
    print(f"redis clients: {before.get('redis_clients')} -> {after.get('redis_clients')}")


def _kb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.0f} MB"


def _write(report: dict[str, Any], results: list[ScheduleResult], options: Options) -> Path:
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / f"chaos-{report['topology']}-{options.seed}.json"
    body = {
        **{k: v for k, v in report.items() if k != "schedules"},
        # The logs' folder by name only (no machine path in a committed result).
        "workdir": Path(report["workdir"]).name,
        "commit": commit(),
        "options": {
            "instances": options.instances,
            "schedules": options.schedules,
            "chats": options.chats,
            "profile": options.profile.__dict__,
            "seed": options.seed,
            "faults": list(options.faults),
        },
        "summary": summary_rows(results),
        "schedules": [r.as_json() for r in results],
        "e2e_anomalies": sum(r.e2e_anomalies() for r in results),
        "e2e_kinds": sorted(E2E_KINDS),
    }
    path.write_text(json.dumps(body, indent=1, default=str) + "\n")
    return path


# -- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Options:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument(
        "--topology", choices=[*TOPOLOGIES, *EXTRA_TOPOLOGIES, "all"], default="standalone"
    )
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--schedules", type=int, default=5)
    parser.add_argument("--chats", type=int, default=None, help="chats per schedule")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--seed", type=int, default=None, help="first schedule's seed")
    parser.add_argument("--faults", default="", help="comma-separated kinds to draw from")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep logs even when all is well")
    args = parser.parse_args(argv)
    if not 2 <= args.instances <= 10 or not 1 <= args.schedules <= 1000:
        parser.error("--instances must be 2..10 and --schedules 1..1000")
    profile = PROFILES[args.profile]
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    return Options(
        topologies=TOPOLOGIES if args.topology == "all" else (args.topology,),
        instances=args.instances,
        schedules=args.schedules,
        chats=min(200, max(1, args.chats or profile.chats)),
        profile=profile,
        seed=seed,
        faults=tuple(k for k in args.faults.split(",") if k),
        out=args.out,
        keep=args.keep,
    )


async def _main(options: Options) -> int:
    failures = 0
    for name in options.topologies:
        unsupported = _unsupported(name, options.faults)
        if unsupported:
            print(f"[{name}] skipped: faults {', '.join(unsupported)} do not apply")
            continue
        print(f"[{name}] seed {options.seed}, {options.schedules} schedules", flush=True)
        report = await run_topology(name, options)
        results: list[ScheduleResult] = report.get("schedules", [])
        _print_topology(report, results)
        print(f"report: {_write(report, results, options)}")
        e2e = sum(r.e2e_anomalies() for r in results)
        failures += e2e
        if e2e or any(r.anomalies() for r in results) or options.keep:
            print(f"logs kept in {report['workdir']}")
        else:
            shutil.rmtree(report["workdir"], ignore_errors=True)
    return 1 if failures else 0


def _unsupported(name: str, faults: tuple[str, ...]) -> list[str]:
    extra = {
        "standalone": STANDALONE_FAULTS,
        "sentinel": SENTINEL_FAULTS,
        "sentinel-ha": SENTINEL_FAULTS,
        "cluster": CLUSTER_FAULTS,
    }[name]
    allowed = {*INSTANCE_FAULTS, REDIS_PAUSE, ROLLING_RESTART, *extra}
    return [f for f in faults if f not in allowed]


def main(argv: list[str] | None = None) -> int:
    """Run the checker; exit status 1 when an end-to-end anomaly was found. SIGTERM stops
    it like Ctrl-C: everything it started (Redis, instances) is stopped first."""
    options = parse_args(argv)

    async def run() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await _main(options)

    try:
        return asyncio.run(run())
    except asyncio.CancelledError:
        return 143


if __name__ == "__main__":
    sys.exit(main())
