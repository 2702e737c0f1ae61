"""Cost as the fleet grows: N instance processes on one Redis, the same total load for every N.

    .venv/bin/python bench/fleet.py [--instances 1-6] [--runs 3] [--layouts mixed,split,...]

A private ``redis-server`` is started on a free loopback port (no persistence) and stopped at
the end. For every layout and every N, a fleet of child processes is started (each one a
``chatscale.streams`` manager on the Redis backend, its own connection and instance id, one
shared key prefix), and the same load is run ``--runs`` times: ``--jobs`` answers of
``--tokens`` tokens of 16 bytes at ``--rate`` tokens/s, each followed by one subscriber.

Layouts (no sticky routing in either: a job is never followed on the process producing it
when there is another one, and each process's followed jobs are spread over every other
producing process, as a load balancer without affinity would spread them):

* ``mixed``: N processes, each producing jobs ``j`` with ``j % N`` equal to its index and
  following jobs of the N - 1 other processes (N = 1: its own).
* ``split``: N producer processes and N reader processes; readers only subscribe and
  producers only produce, so the reader's cost per delivered token and the producer's cost
  per produced token are measured apart.
* ``per-instance``: ``mixed`` with a load that grows with the fleet (``--jobs-per-instance``
  jobs per process, 10 by default) instead of a fixed total: every process does the same
  work for every N, so what changes with N is only the size of the fleet around it.
* ``isolated``: the control of ``per-instance``: N processes with the same load each, but
  every one a fleet of its own (its own key prefix, following its own jobs). The machine is
  as busy as in ``per-instance``; nothing is shared. A difference between the two is what
  fleet size costs; what both show as N grows is contention for the machine's cores.

``--setting NAME=VALUE`` passes a chatscale setting to every instance (e.g.
``stream_delta_coalesce_ms=20``).

Measured per process (in the child, over the window from the start signal until its own
producers and subscribers are done): CPU seconds (``getrusage(RUSAGE_SELF)``, user + system),
tokens produced and delivered to its subscribers, and bytes received from / sent to Redis
(counted at asyncio's ``StreamReader.feed_data`` / ``StreamWriter.write``, which every
redis-py connection of the process goes through). Measured on Redis over the same window
(``INFO stats``, ``INFO cpu``, ``INFO commandstats`` before and after; the benchmark's own
INFO reply is subtracted): output and input bytes, CPU, XADD / PUBLISH / EVALSHA calls.
Redis 7.0 has no per-client byte counters in ``CLIENT LIST``; the per-process figures come
from the client side instead.

``old_design_read_tokens`` is not measured: it is what the previous design (one instance
log per instance, read whole by every process following any job of that instance) would
have delivered to the same processes for the same placement, computed from the placement.

Raw results are written as JSON to ``bench/results/fleet-<commit>.json`` (``--out`` to
change it); the medians are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from bench._common import (  # noqa: E402
    CHUNK_BYTES,
    PrivateRedis,
    make_chunk,
    median,
    now_us,
    percentile,
    read_stamp_digits,
    setting_overrides,
)

LAYOUTS = ("mixed", "split", "per-instance", "isolated")
#: Time between the start signal and the first token: every process has read the signal.
START_DELAY_S = 0.3
#: Bounds of every wait of the parent (seconds).
SPAWN_TIMEOUT_S = 60.0
STEP_TIMEOUT_S = 30.0
SUBSCRIBE_TIMEOUT_S = 20.0
QUIT_TIMEOUT_S = 10.0
#: Tokens per job of the warm-up run of every fleet (not recorded).
WARMUP_TOKENS = 10
OWNER = "bench"


class FleetError(RuntimeError):
    """A run failed: a child died, lost or duplicated tokens, or a time-out."""


# --------------------------------------------------------------------------------------
# Child: one instance process
# --------------------------------------------------------------------------------------


class _Bytes:
    """Bytes this process received from and wrote to its asyncio streams (all Redis)."""

    received = 0
    sent = 0


def _count_stream_bytes() -> None:
    """Count every byte going through asyncio streams (redis-py's only transport here)."""
    feed_data = asyncio.StreamReader.feed_data
    write = asyncio.StreamWriter.write
    writelines = asyncio.StreamWriter.writelines

    def counted_feed(self: asyncio.StreamReader, data: bytes) -> None:
        _Bytes.received += len(data)
        feed_data(self, data)

    def counted_write(self: asyncio.StreamWriter, data: Any) -> None:
        _Bytes.sent += len(data)
        write(self, data)

    def counted_writelines(self: asyncio.StreamWriter, data: Iterable[Any]) -> None:
        pieces = list(data)
        _Bytes.sent += sum(len(piece) for piece in pieces)
        writelines(self, pieces)

    asyncio.StreamReader.feed_data = counted_feed  # type: ignore[method-assign,assignment]
    asyncio.StreamWriter.write = counted_write  # type: ignore[method-assign]
    asyncio.StreamWriter.writelines = counted_writelines  # type: ignore[method-assign]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class _Tally:
    """What this process's subscribers received in one run."""

    tokens: int = 0
    events: int = 0
    latencies_us: list[int] = field(default_factory=list)


async def _follow(manager: Any, job_id: str, expected: int, tally: _Tally) -> None:
    """Subscribe to ``job_id`` from its start; check every token arrives once, in order."""
    seen = 0
    previous = ""
    async for event in manager.subscribe(job_id, after=None, owner=OWNER):
        if event.type == "delta":
            arrived = now_us()
            stamps = read_stamp_digits(event.data["text"])
            tally.events += 1
            if stamps and (stamps[0] < previous or stamps != sorted(stamps)):
                raise FleetError(f"job {job_id}: tokens out of order")
            if stamps:
                previous = stamps[-1]
            tally.latencies_us.extend(arrived - int(stamp) for stamp in stamps)
            seen += len(stamps)
        if event.final:
            break
    if seen != expected:
        raise FleetError(f"job {job_id}: {seen} tokens delivered, expected {expected}")
    tally.tokens += seen


async def _produce(
    producer: Any, tokens: int, rate: float, start_us: int, offset_s: float, lag: list[float]
) -> None:
    """Paced producer on an absolute schedule (a late token is counted in ``lag``)."""
    interval_us = 1_000_000 / rate
    first = start_us + offset_s * 1_000_000
    worst = 0.0
    for index in range(tokens):
        delay = first + index * interval_us - now_us()
        if delay > 0:
            await asyncio.sleep(delay / 1_000_000)
        else:
            worst = max(worst, -delay)
        await producer.delta(make_chunk(now_us()))
    await producer.complete()
    lag.append(worst / 1000)


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _next_command() -> dict[str, Any]:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        return {"cmd": "quit"}  # the parent is gone
    command: dict[str, Any] = json.loads(line)
    return command


async def _child(url: str, prefix: str, name: str, overrides: dict[str, str]) -> None:
    """Serve the parent's commands (one JSON object per line) until ``quit``."""
    from chatscale.config import load_settings
    from chatscale.redis import connect
    from chatscale.streams import create_stream_manager

    _count_stream_bytes()
    settings = load_settings(use_redis=True, redis_uri=url, redis_key_prefix=prefix, **overrides)
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection, instance_id=name)
    await manager.start()
    producers: dict[str, Any] = {}
    followers: list[asyncio.Task[None]] = []
    tally = _Tally()
    try:
        _reply({"ready": True, "pid": os.getpid()})
        while True:
            command = await _next_command()
            kind = command["cmd"]
            if kind == "quit":
                break
            if kind == "create":
                for job_id in command["jobs"]:
                    producers[job_id] = await manager.create(owner=OWNER, meta={}, job_id=job_id)
                _reply({"created": len(producers)})
            elif kind == "follow":
                tally = _Tally()
                followers = [
                    asyncio.create_task(_follow(manager, job_id, command["tokens"], tally))
                    for job_id in command["jobs"]
                ]
                _reply({"following": len(followers)})
            elif kind == "go":
                _reply(await _go(manager, command, producers, followers, tally))
                producers, followers = {}, []
    finally:
        for task in followers:
            task.cancel()
        await manager.close()
        await connection.close()


async def _go(
    manager: Any,
    command: dict[str, Any],
    producers: dict[str, Any],
    followers: list[asyncio.Task[None]],
    tally: _Tally,
) -> dict[str, Any]:
    """Run this process's producers and wait for its subscribers; return its figures."""
    cpu_before = _cpu_s()
    received_before, sent_before = _Bytes.received, _Bytes.sent
    metrics_before = manager.metrics.snapshot()
    window_start = now_us()
    start_us = int(command["start_us"])
    offsets: dict[str, float] = command["offsets"]
    lag: list[float] = []
    writers = [
        asyncio.create_task(
            _produce(producer, command["tokens"], command["rate"], start_us, offsets[job], lag)
        )
        for job, producer in producers.items()
    ]
    tasks = [*writers, *followers]
    try:
        async with asyncio.timeout(command["budget_s"]):
            await asyncio.gather(*tasks)
    except TimeoutError:
        raise FleetError(f"run did not finish within {command['budget_s']} s") from None
    finally:
        for task in tasks:
            task.cancel()
    cpu = _cpu_s() - cpu_before
    metrics_after = manager.metrics.snapshot()
    return {
        "cpu_s": round(cpu, 4),
        "window_s": round((now_us() - window_start) / 1_000_000, 4),
        "tokens_produced": len(producers) * command["tokens"],
        "tokens_delivered": tally.tokens,
        "events_delivered": tally.events,
        "jobs_produced": len(producers),
        "jobs_followed": len(followers),
        "received_bytes": _Bytes.received - received_before,
        "sent_bytes": _Bytes.sent - sent_before,
        "producer_lag_max_ms": round(max(lag), 3) if lag else None,
        "metrics": {
            name: metrics_after[name] - metrics_before.get(name, 0)
            for name in metrics_after
            if name not in {"jobs_active", "subscribers"}
        },
        "latencies_us": tally.latencies_us,
    }


# --------------------------------------------------------------------------------------
# Parent: the fleet, the runs, Redis's counters
# --------------------------------------------------------------------------------------


class Instance:
    """One child process and its line protocol."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    @classmethod
    async def spawn(
        cls, name: str, url: str, prefix: str, logs: Path, settings: list[str]
    ) -> Instance:
        """Start ``python bench/fleet.py --child`` (stderr goes to a log file)."""
        log = logs / f"{name}.log"
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(SCRIPT), "--child",
                "--redis-url", url, "--prefix", prefix, "--name", name,
                *(f"--setting={pair}" for pair in settings),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                limit=16 * 1024 * 1024,
            )  # fmt: skip
        return cls(name, proc, log)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    async def send(self, message: dict[str, Any]) -> None:
        """Write one command."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()

    async def receive(self, timeout_s: float) -> dict[str, Any]:
        """Read one answer (a dead child or a time-out raises :class:`FleetError`)."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise FleetError(f"{self.name}: no answer within {timeout_s} s") from None
        if not line:
            raise FleetError(f"{self.name} exited: {self._tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def stop(self) -> None:
        """Ask it to quit; terminate, then kill it if it does not (this process only)."""
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await self.send({"cmd": "quit"})
        for signal_it in (None, self.proc.terminate, self.proc.kill):
            if signal_it is not None:
                try:
                    signal_it()
                except ProcessLookupError:
                    return
            try:
                async with asyncio.timeout(QUIT_TIMEOUT_S / 2):
                    await self.proc.wait()
                return
            except TimeoutError:
                continue


async def _all(calls: Iterable[Any]) -> list[Any]:
    return list(await asyncio.gather(*calls))


def placement(layout: str, instances: int, jobs: int) -> list[tuple[int, int]]:
    """For each job, the indexes of its producing and its following process.

    ``mixed``: process ``j % N`` produces job ``j``; its follower is another process, the
    k-th job of a producer going to the k-th other process in turn (no sticky routing:
    each process follows jobs of every other process). ``split``: producers are processes
    ``0..N-1``, readers ``N..2N-1``; each reader follows jobs of every producer.
    """
    plan: list[tuple[int, int]] = []
    for job in range(jobs):
        producer, turn = job % instances, job // instances
        if layout == "split":
            follower = instances + (producer + turn) % instances
        elif instances == 1 or layout == "isolated":
            follower = producer
        else:
            follower = (producer + 1 + turn % (instances - 1)) % instances
        plan.append((producer, follower))
    return plan


class RedisStats:
    """``INFO stats`` / ``cpu`` / ``commandstats`` read raw (to know the replies' size)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, protocol=2)
        self.client.set_response_callback("INFO", lambda response, **_: response)

    def _info(self, section: str) -> tuple[dict[str, str], int]:
        raw: bytes = self.client.execute_command("INFO", section)
        values: dict[str, str] = {}
        for line in raw.decode().splitlines():
            name, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                values[name] = value
        # A bulk string reply: $<len>\r\n<body>\r\n.
        return values, len(raw) + len(str(len(raw))) + 5

    def snapshot(self, first: bool) -> tuple[dict[str, float], int]:
        """Counters now, and the bytes of the reply Redis counts inside the window.

        Before the window (``first``) ``stats`` is read last, after it first: only the
        reply to the first snapshot's ``INFO stats`` is written after one counter read and
        before the other, so it alone is subtracted.
        """
        order = ("commandstats", "cpu", "stats") if first else ("stats", "cpu", "commandstats")
        values: dict[str, float] = {}
        own = 0
        for section in order:
            info, size = self._info(section)
            if section == "stats":
                own = size
                for name in ("total_net_output_bytes", "total_net_input_bytes"):
                    values[name] = float(info[name])
                values["total_commands_processed"] = float(info["total_commands_processed"])
            elif section == "cpu":
                values["cpu_s"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            else:
                for name, text in info.items():
                    fields = dict(part.split("=", 1) for part in text.split(","))
                    values[name.removeprefix("cmdstat_")] = float(fields.get("calls", 0))
        return values, own

    def numsub(self, channels: list[str]) -> list[int]:
        """Subscribers of each channel (``PUBSUB NUMSUB``)."""
        counts: list[tuple[Any, int]] = self.client.pubsub_numsub(*channels)
        return [int(count) for _, count in counts]

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


@dataclass
class Fleet:
    """The child processes of one layout and one N."""

    layout: str
    n: int
    instances: list[Instance]
    #: The key prefix of each process (one for the whole fleet but in ``isolated``).
    prefixes: list[str]
    stats: RedisStats

    def channel(self, job_id: str, producer: int) -> str:
        """The pub/sub channel of a job (``P::stream:{<job>}:ev``)."""
        from chatscale.redis.keys import KeySpace

        return KeySpace(self.prefixes[producer]).stream_events(job_id)


async def _wait_subscribed(fleet: Fleet, channels: list[str]) -> float:
    """Until Redis counts a subscriber on every channel; returns the seconds it took."""
    started = time.perf_counter()
    deadline = started + SUBSCRIBE_TIMEOUT_S
    while time.perf_counter() < deadline:
        counts = await asyncio.to_thread(fleet.stats.numsub, channels)
        if all(count >= 1 for count in counts):
            return time.perf_counter() - started
        await asyncio.sleep(0.02)
    raise FleetError(f"subscriptions not confirmed within {SUBSCRIBE_TIMEOUT_S} s")


def _per_token(value: float, tokens: int, scale: float = 1.0) -> float | None:
    return round(value * scale / tokens, 3) if tokens else None


async def run_once(fleet: Fleet, run: str, jobs: int, tokens: int, rate: float) -> dict[str, Any]:
    """One run of the load on ``fleet``; returns the per-process and Redis figures."""
    plan = placement(fleet.layout, fleet.n, jobs)
    ids = [f"{run}j{job}" for job in range(jobs)]
    produced: dict[int, list[str]] = {}
    followed: dict[int, list[str]] = {}
    for job_id, (producer, follower) in zip(ids, plan, strict=True):
        produced.setdefault(producer, []).append(job_id)
        followed.setdefault(follower, []).append(job_id)
    instances = fleet.instances
    # Jobs first (a subscriber of an unknown job gets JobNotFound), then the subscribers.
    await _all(instances[i].send({"cmd": "create", "jobs": produced[i]}) for i in produced)
    await _all(instances[i].receive(STEP_TIMEOUT_S) for i in produced)
    await _all(
        instances[i].send({"cmd": "follow", "jobs": followed[i], "tokens": tokens})
        for i in followed
    )
    await _all(instances[i].receive(STEP_TIMEOUT_S) for i in followed)
    channels = [
        fleet.channel(job_id, producer) for job_id, (producer, _) in zip(ids, plan, strict=True)
    ]
    subscribe_s = await _wait_subscribed(fleet, channels)
    before, own_bytes = await asyncio.to_thread(fleet.stats.snapshot, True)
    ideal_s = tokens / rate
    budget_s = 60.0 + 5 * ideal_s
    go = {
        "cmd": "go",
        "start_us": now_us() + int(START_DELAY_S * 1_000_000),
        "tokens": tokens,
        "rate": rate,
        # The same stagger for every N: job j starts j/jobs of a token interval late.
        "offsets": {job_id: index / jobs / rate for index, job_id in enumerate(ids)},
        "budget_s": budget_s,
    }
    await _all(instance.send(go) for instance in instances)
    answers = await _all(instance.receive(budget_s + STEP_TIMEOUT_S) for instance in instances)
    after, _ = await asyncio.to_thread(fleet.stats.snapshot, False)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    delivered = sum(int(a["tokens_delivered"]) for a in answers)
    total = jobs * tokens
    if delivered != total:
        raise FleetError(f"run {run}: {delivered} tokens delivered, expected {total}")
    latencies = sorted(lat for a in answers for lat in a.pop("latencies_us"))
    # What the instance-log design would have made each process read: every token of every
    # instance it follows at least one job of (its own jobs' log included).
    job_tokens = {job_id: tokens for job_id in ids}
    instance_tokens = {
        i: sum(job_tokens[job_id] for job_id in produced.get(i, [])) for i in produced
    }
    processes: list[dict[str, Any]] = []
    for index, (instance, answer) in enumerate(zip(instances, answers, strict=True)):
        followed_instances = {plan[ids.index(job_id)][0] for job_id in followed.get(index, [])}
        old_read = sum(instance_tokens[i] for i in followed_instances)
        got = int(answer["tokens_delivered"])
        made = int(answer["tokens_produced"])
        role = "both" if made and got else ("producer" if made else "reader")
        processes.append(
            {
                "name": instance.name,
                "role": role,
                **answer,
                "cpu_us_per_delivered_token": _per_token(answer["cpu_s"], got, 1e6),
                "cpu_us_per_produced_token": _per_token(answer["cpu_s"], made, 1e6),
                "received_bytes_per_delivered_token": _per_token(answer["received_bytes"], got),
                "sent_bytes_per_produced_token": _per_token(answer["sent_bytes"], made),
                "instances_followed": len(followed_instances),
                "old_design_read_tokens": old_read,
            }
        )
    redis_out = delta("total_net_output_bytes") - own_bytes
    old_read_total = sum(p["old_design_read_tokens"] for p in processes)
    return {
        "run": run,
        "tokens_total": total,
        "tokens_delivered": delivered,
        "subscribe_s": round(subscribe_s, 3),
        "wall_s": round(max(float(a["window_s"]) for a in answers) - START_DELAY_S, 3),
        "ideal_s": ideal_s,
        "lat_p50_ms": round(percentile(latencies, 50) / 1000, 2),
        "lat_p99_ms": round(percentile(latencies, 99) / 1000, 2),
        "fleet_cpu_s": round(sum(float(a["cpu_s"]) for a in answers), 4),
        "fleet_cpu_us_per_token": _per_token(sum(float(a["cpu_s"]) for a in answers), total, 1e6),
        "redis": {
            "output_bytes": int(redis_out),
            "input_bytes": int(delta("total_net_input_bytes")),
            "output_bytes_per_delivered_token": _per_token(redis_out, delivered),
            "input_bytes_per_produced_token": _per_token(delta("total_net_input_bytes"), total),
            "cpu_s": round(delta("cpu_s"), 4),
            "cpu_us_per_token": _per_token(delta("cpu_s"), total, 1e6),
            "commands": int(delta("total_commands_processed")),
            "commands_per_token": _per_token(delta("total_commands_processed"), total),
            "xadd": int(delta("xadd")),
            "publish": int(delta("publish") + delta("spublish")),
            "evalsha": int(delta("evalsha")),
            "tokens_per_append": _per_token(total, int(delta("xadd")) or 1, 1.0),
            "own_info_bytes_subtracted": own_bytes,
        },
        "old_design_read_tokens": old_read_total,
        "old_design_read_amplification": round(old_read_total / delivered, 3),
        "processes": processes,
    }


async def start_fleet(
    layout: str, n: int, url: str, logs: Path, stats: RedisStats, settings: list[str]
) -> Fleet:
    """Spawn the processes of one layout and N and wait until each is ready."""
    names = [f"i{i}" for i in range(n)]
    if layout == "split":
        names = [f"p{i}" for i in range(n)] + [f"r{i}" for i in range(n)]
    prefix = f"fleet{uuid.uuid4().hex[:8]}"
    prefixes = [f"{prefix}x{i}" if layout == "isolated" else prefix for i in range(len(names))]
    instances: list[Instance] = []
    fleet = Fleet(layout, n, instances, prefixes, stats)
    try:
        for name, own_prefix in zip(names, prefixes, strict=True):
            instances.append(
                await Instance.spawn(f"{layout}{n}-{name}", url, own_prefix, logs, settings)
            )
        await _all(instance.receive(SPAWN_TIMEOUT_S) for instance in instances)
    except BaseException:
        await stop_fleet(fleet)
        raise
    return fleet


async def stop_fleet(fleet: Fleet) -> None:
    """Stop every process of the fleet (each by its own handle)."""
    await asyncio.gather(*(instance.stop() for instance in fleet.instances))


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------


def _median_of(runs: list[dict[str, Any]], pick: Callable[[dict[str, Any]], Any]) -> float | None:
    values = [float(v) for v in (pick(r) for r in runs) if isinstance(v, int | float)]
    return round(median(values), 3) if values else None


def _process_median(run: dict[str, Any], role: str, name: str) -> float | None:
    values = [float(p[name]) for p in run["processes"] if p["role"] == role and p[name]]
    return median(values) if values else None


def summarise(layout: str, n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs (per-process figures: the median process of each run first)."""
    reader_role = "reader" if layout == "split" else "both"
    return {
        "layout": layout,
        "instances": n,
        "processes": len(runs[0]["processes"]) if runs else 0,
        "runs": len(runs),
        "reader_cpu_us_per_delivered_token": _median_of(
            runs, lambda r: _process_median(r, reader_role, "cpu_us_per_delivered_token")
        ),
        "producer_cpu_us_per_produced_token": _median_of(
            runs,
            lambda r: _process_median(
                r, "producer" if layout == "split" else "both", "cpu_us_per_produced_token"
            ),
        ),
        "fleet_cpu_us_per_token": _median_of(runs, lambda r: r["fleet_cpu_us_per_token"]),
        "reader_received_bytes_per_delivered_token": _median_of(
            runs, lambda r: _process_median(r, reader_role, "received_bytes_per_delivered_token")
        ),
        "redis_output_bytes_per_delivered_token": _median_of(
            runs, lambda r: r["redis"]["output_bytes_per_delivered_token"]
        ),
        "redis_cpu_us_per_token": _median_of(runs, lambda r: r["redis"]["cpu_us_per_token"]),
        "tokens_per_append": _median_of(runs, lambda r: r["redis"]["tokens_per_append"]),
        "redis_commands_per_token": _median_of(runs, lambda r: r["redis"]["commands_per_token"]),
        "lat_p50_ms": _median_of(runs, lambda r: r["lat_p50_ms"]),
        "lat_p99_ms": _median_of(runs, lambda r: r["lat_p99_ms"]),
        "wall_s": _median_of(runs, lambda r: r["wall_s"]),
        "old_design_read_amplification": _median_of(
            runs, lambda r: r["old_design_read_amplification"]
        ),
    }


def table(summaries: list[dict[str, Any]]) -> str:
    """The medians as markdown."""
    head = (
        "| layout | N | jobs | processes | reader CPU µs / delivered token | producer CPU µs / "
        "produced token | fleet CPU µs / token | reader bytes received / delivered token | "
        "Redis output bytes / delivered token | Redis CPU µs / token | tokens / append | "
        "p50 / p99 ms | instance-log design: tokens read / delivered |"
    )
    lines = [head, "|" + "---|" * 13]

    def cell(value: float | None, digits: int = 1) -> str:
        return "–" if value is None else f"{value:,.{digits}f}"

    for s in summaries:
        lines.append(
            f"| {s['layout']} | {s['instances']} | {s['jobs']} | {s['processes']} "
            f"| {cell(s['reader_cpu_us_per_delivered_token'])} "
            f"| {cell(s['producer_cpu_us_per_produced_token'])} "
            f"| {cell(s['fleet_cpu_us_per_token'])} "
            f"| {cell(s['reader_received_bytes_per_delivered_token'])} "
            f"| {cell(s['redis_output_bytes_per_delivered_token'])} "
            f"| {cell(s['redis_cpu_us_per_token'])} "
            f"| {cell(s['tokens_per_append'], 2)} "
            f"| {cell(s['lat_p50_ms'])} / {cell(s['lat_p99_ms'])} "
            f"| {cell(s['old_design_read_amplification'], 2)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _instances(text: str) -> list[int]:
    first, sep, last = text.partition("-")
    values = list(range(int(first), int(last) + 1)) if sep else [int(v) for v in text.split(",")]
    if not values or min(values) < 1 or max(values) > 32:
        raise argparse.ArgumentTypeError("instances must be within 1..32, e.g. 1-6 or 1,2,4")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--instances", type=_instances, default=_instances("1-6"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--layouts",
        default="mixed,split,per-instance,isolated",
        help="comma-separated: " + ", ".join(LAYOUTS),
    )
    parser.add_argument("--jobs", type=int, default=60, help="jobs in total, for every N")
    parser.add_argument(
        "--jobs-per-instance", type=int, default=10, help="jobs per process (per-instance layout)"
    )
    parser.add_argument("--tokens", type=int, default=200, help="tokens per job")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s per job")
    parser.add_argument("--out", type=Path, default=None, help="JSON file of every run")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="chatscale setting of every instance, e.g. stream_delta_coalesce_ms=20",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    return parser


def _commit() -> tuple[str, bool]:
    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip()

    return git("rev-parse", "--short", "HEAD") or "unknown", bool(git("status", "--short", "src"))


async def _measure(args: argparse.Namespace, url: str, logs: Path) -> dict[str, Any]:
    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    unknown = [name for name in layouts if name not in LAYOUTS]
    if unknown:
        raise SystemExit(f"unknown layout(s) {unknown}; choose from {', '.join(LAYOUTS)}")
    stats = RedisStats(url)
    results: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    try:
        for layout in layouts:
            for n in args.instances:
                started = time.perf_counter()
                per_instance = layout in {"per-instance", "isolated"}
                jobs = args.jobs_per_instance * n if per_instance else args.jobs
                fleet = await start_fleet(layout, n, url, logs, stats, args.setting)
                try:
                    await run_once(fleet, "w", jobs, WARMUP_TOKENS, args.rate)
                    runs = [
                        await run_once(fleet, f"r{i}", jobs, args.tokens, args.rate)
                        for i in range(args.runs)
                    ]
                finally:
                    await stop_fleet(fleet)
                summary = {"jobs": jobs, **summarise(layout, n, runs)}
                summaries.append(summary)
                results.append({**summary, "runs": runs})
                print(
                    f"{layout} N={n}: {time.perf_counter() - started:.1f} s, "
                    f"reader {summary['reader_cpu_us_per_delivered_token']} µs/token, "
                    f"Redis out {summary['redis_output_bytes_per_delivered_token']} B/token",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        stats.close()
    return {"summaries": summaries, "results": results}


def _versions(url: str) -> dict[str, Any]:
    with redis.Redis.from_url(url) as client:
        server = client.info("server")["redis_version"]
    return {
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "redis_server": server,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point (parent: run everything and write the JSON; ``--child``: one instance)."""
    args = _parser().parse_args(argv)
    if args.child:
        asyncio.run(_child(args.redis_url, args.prefix, args.name, setting_overrides(args.setting)))
        return 0
    setting_overrides(args.setting)  # fail early on a malformed pair
    if args.runs < 1 or args.jobs < 1 or args.tokens < 1 or args.rate <= 0:
        raise SystemExit("--runs, --jobs, --tokens and --rate must be positive")
    commit, dirty = _commit()
    out: Path = args.out or ROOT / "bench" / "results" / f"fleet-{commit}.json"
    started = time.perf_counter()
    with PrivateRedis() as server, tempfile.TemporaryDirectory(prefix="chatscale-fleet-") as tmp:
        load_before = os.getloadavg()
        measured = asyncio.run(_measure(args, server.url, Path(tmp)))
        versions = _versions(server.url)
    document = {
        "benchmark": "fleet",
        "commit": commit,
        "src_dirty": dirty,
        "date": time.strftime("%Y-%m-%d"),
        "load": {"jobs": args.jobs, "jobs_per_instance": args.jobs_per_instance,
                 "tokens_per_job": args.tokens, "rate": args.rate, "token_bytes": CHUNK_BYTES,
                 "runs": args.runs, "settings": setting_overrides(args.setting)},
        "load_average_before": load_before,
        "duration_s": round(time.perf_counter() - started, 1),
        "versions": versions,
        **measured,
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(table(measured["summaries"]))
    print(f"\nraw results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
