"""Resumable-streams benchmark: workloads a, b, b100, c, m on chatscale or a baseline.

    .venv/bin/python bench/streams.py a --backend redis [--redis-url URL] [--runs 3]

Backends: ``memory`` (chatscale, in process), ``redis`` (chatscale on Redis) and ``baseline``
(plain redis-py with hiredis: one XADD per chunk, one XREAD BLOCK loop per consumer). Without
``--redis-url`` a private ``redis-server`` is started on a free loopback port and stopped at
the end. Prints one JSON object; with ``--runs N`` each run is a fresh child process (so that
peak RSS is per run) and the object holds the medians plus every run.

Measurement: CPU is ``getrusage(RUSAGE_SELF)`` user + system time and wall time runs from the
moment the producers are released (jobs created and consumers subscribed before) to the last
chunk seen by the last consumer; peak RSS is ``ru_maxrss``. Redis commands are counted with
``CONFIG RESETSTAT`` before creating the streams and ``INFO commandstats`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from bench._common import (  # noqa: E402
    KEPT_UP_FACTOR,
    WORKLOADS,
    PrivateRedis,
    Usage,
    Workload,
    commands_total,
    make_chunk,
    median,
    now_us,
    percentile,
    read_stamp_digits,
    setting_overrides,
)
from bench._timeline import Recording  # noqa: E402
from bench.http_client import commit  # noqa: E402
from redis.asyncio import ConnectionPool  # noqa: E402

from chatscale.errors import ChatscaleError  # noqa: E402
from chatscale.redis import RedisConnection  # noqa: E402
from chatscale.runtime import tune_gc  # noqa: E402
from chatscale.streams import StreamManager  # noqa: E402

BACKENDS = ("memory", "redis", "baseline", "queue")
SETTLE_S = 0.3
BLOCK_MS = 1_000  # below redis-py's 5 s socket timeout
RESUME_BATCH = 1_000


class BenchError(RuntimeError):
    """A run failed: lost, duplicated or malformed chunks, or a time-out."""


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------


@dataclass
class Producer:
    """Write chunks to one stream, then mark it finished."""

    stream_id: str
    write: Callable[[str], Awaitable[Any]]
    finish: Callable[[], Awaitable[Any]]


class Backend(ABC):
    """What the workload runner needs from a system under test."""

    name: str
    #: Separate client for CONFIG RESETSTAT / INFO / MEMORY USAGE (None without Redis).
    admin: redis.asyncio.Redis | None = None
    #: Key prefix under which this run's keys live (for SCAN + MEMORY USAGE).
    prefix: str = ""

    @abstractmethod
    async def start(self, workload: Workload) -> None:
        """Connect and prepare."""

    @abstractmethod
    async def open(self, index: int) -> Producer:
        """Create stream ``index``."""

    @abstractmethod
    def read(self, stream_id: str, expected_chunks: int) -> AsyncIterator[str]:
        """Every text message of the stream from its start, ending after its last chunk."""

    @abstractmethod
    async def close(self) -> None:
        """Release everything (idempotent)."""


def _prefix() -> str:
    return f"bench{uuid.uuid4().hex[:8]}"


class ChatscaleBackend(Backend):
    """chatscale.streams through its public API, in memory or on Redis."""

    def __init__(self, redis_url: str | None, overrides: dict[str, str]) -> None:
        self.name = "redis" if redis_url else "memory"
        self._url = redis_url
        self._overrides = overrides
        self._manager: StreamManager | None = None
        self._connection: RedisConnection | None = None
        self.prefix = _prefix()

    async def start(self, workload: Workload) -> None:
        from chatscale.config import load_settings
        from chatscale.redis import connect
        from chatscale.streams import create_stream_manager

        if self._url:
            settings = load_settings(
                use_redis=True,
                redis_uri=self._url,
                redis_key_prefix=self.prefix,
                **self._overrides,
            )
            assert settings.redis is not None
            self._connection = await connect(settings.redis)
            self.admin = redis.asyncio.Redis.from_url(self._url)
        else:
            settings = load_settings(use_redis=False, **self._overrides)
        self._manager = create_stream_manager(settings, self._connection, instance_id="bench")
        await self._manager.start()

    async def open(self, index: int) -> Producer:
        assert self._manager is not None
        producer = await self._manager.create(owner="bench", meta={})
        return Producer(producer.job_id, producer.delta, producer.complete)

    async def read(self, stream_id: str, expected_chunks: int) -> AsyncIterator[str]:
        assert self._manager is not None
        async for event in self._manager.subscribe(stream_id, after=None):
            if event.type == "delta":
                yield event.data["text"]
            if event.final:
                return

    async def close(self) -> None:
        if self._manager is not None:
            manager, self._manager = self._manager, None
            await manager.close()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()
        if self.admin is not None:
            admin, self.admin = self.admin, None
            await admin.aclose()


class BaselineBackend(Backend):
    """Plain redis-py (hiredis parser): one XADD per chunk, one XREAD BLOCK per consumer."""

    name = "baseline"

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self._client: redis.asyncio.Redis | None = None
        self.prefix = _prefix()

    async def start(self, workload: Workload) -> None:
        # Every blocked consumer holds a connection and every producer needs one for its
        # XADD: a pool that size, waiting rather than failing when it is exhausted.
        size = workload.streams * (workload.consumers + 1) + 8
        pool = ConnectionPool.from_url(self._url, max_connections=size)
        self._client = redis.asyncio.Redis(connection_pool=pool)
        self.admin = redis.asyncio.Redis.from_url(self._url)
        await self._client.ping()

    def _key(self, index: int) -> str:
        return f"{self.prefix}::bench:{index}"

    async def open(self, index: int) -> Producer:
        client = self._client
        assert client is not None
        key = self._key(index)

        async def write(text: str) -> None:
            await client.xadd(key, {b"d": text})

        async def finish() -> None:
            return None

        return Producer(key, write, finish)

    async def read(self, stream_id: str, expected_chunks: int) -> AsyncIterator[str]:
        client = self._client
        assert client is not None
        last: bytes = b"0-0"
        seen = 0
        while seen < expected_chunks:
            reply: Any = await client.xread({stream_id: last}, block=BLOCK_MS)
            for _key, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id
                    text = fields[b"d"].decode()
                    seen += len(text) // 16
                    yield text

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
            await client.connection_pool.disconnect()
        if self.admin is not None:
            admin, self.admin = self.admin, None
            await admin.aclose()


class QueueBackend(Backend):
    """The harness's own cost: a list and a wake-up per stream, no system under test.

    Pacing timers, stamping, parsing and latency bookkeeping cost CPU in every backend;
    this floor shows how much of a backend's CPU % is the benchmark itself.
    """

    name = "queue"

    def __init__(self) -> None:
        self._logs: dict[str, list[str | None]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def start(self, workload: Workload) -> None:
        self._logs.clear()
        self._waiters.clear()

    async def open(self, index: int) -> Producer:
        stream_id = str(index)
        log = self._logs[stream_id] = []
        waiters = self._waiters[stream_id] = []

        def append(item: str | None) -> None:
            log.append(item)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()

        async def write(text: str) -> None:
            append(text)

        async def finish() -> None:
            append(None)

        return Producer(stream_id, write, finish)

    async def read(self, stream_id: str, expected_chunks: int) -> AsyncIterator[str]:
        log = self._logs[stream_id]
        position = 0
        while True:
            if position < len(log):
                item = log[position]
                position += 1
                if item is None:
                    return
                yield item
            else:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters[stream_id].append(waiter)
                await waiter

    async def close(self) -> None:
        self._logs.clear()
        self._waiters.clear()


def make_backend(name: str, redis_url: str | None, overrides: dict[str, str]) -> Backend:
    """The backend called ``name``."""
    if name == "queue":
        return QueueBackend()
    if name == "memory":
        return ChatscaleBackend(None, overrides)
    if redis_url is None:
        raise BenchError(f"backend {name} needs a Redis URL")
    if name == "redis":
        return ChatscaleBackend(redis_url, overrides)
    return BaselineBackend(redis_url)


# --------------------------------------------------------------------------------------
# Workload runner
# --------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the consumers saw."""

    latencies_us: list[int] = field(default_factory=list)
    #: When each latency of ``latencies_us`` was seen (parallel list, for the timeline).
    arrivals_us: list[int] = field(default_factory=list)
    deliveries: int = 0
    messages: int = 0
    last_seen_us: int = 0


async def _consume(
    backend: Backend, stream_id: str, expected: int, tally: Tally, live: bool
) -> None:
    seen = 0
    previous = ""
    async for text in backend.read(stream_id, expected):
        arrived = now_us()
        stamps = read_stamp_digits(text)
        tally.messages += 1
        if not stamps:
            continue
        # Fixed-width digits compare as the numbers do; sorting a sorted list is linear.
        if stamps[0] < previous or (len(stamps) > 1 and stamps != sorted(stamps)):
            raise BenchError(f"stream {stream_id}: chunk out of order")
        previous = stamps[-1]
        if live:
            tally.latencies_us.extend([arrived - stamp for stamp in map(int, stamps)])
            tally.arrivals_us.extend([arrived] * len(stamps))
        seen += len(stamps)
        if seen > expected:
            raise BenchError(f"stream {stream_id}: {seen} chunks, expected {expected}")
        tally.last_seen_us = max(tally.last_seen_us, arrived)
    if seen != expected:
        raise BenchError(f"stream {stream_id}: stream ended after {seen} of {expected} chunks")
    tally.deliveries += seen


async def _produce(
    producer: Producer, workload: Workload, start_us: int, offset_s: float, lag: list[float]
) -> None:
    write = producer.write
    if workload.rate is None:
        for _ in range(workload.chunks):
            await write(make_chunk(now_us()))
    else:
        interval_us = 1_000_000 / workload.rate
        first = start_us + offset_s * 1_000_000
        worst = 0.0
        for index in range(workload.chunks):
            due = first + index * interval_us
            delay = due - now_us()
            if delay > 0:
                await asyncio.sleep(delay / 1_000_000)
            else:
                worst = max(worst, -delay)
            await write(make_chunk(now_us()))
        lag.append(worst / 1000)
    await producer.finish()


async def _open_all(backend: Backend, count: int) -> list[Producer]:
    # Bounded concurrency: creating 500 jobs one by one would measure round trips only.
    gate = asyncio.Semaphore(32)

    async def one(index: int) -> Producer:
        async with gate:
            return await backend.open(index)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _redis_commands(backend: Backend) -> tuple[int, dict[str, int]] | None:
    if backend.admin is None:
        return None
    stats = await backend.admin.info("commandstats")
    per_command = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }
    return commands_total(stats), per_command


async def _memory_ratio(backend: Backend, text_bytes: int) -> tuple[float, int] | None:
    admin = backend.admin
    if admin is None:
        return None
    total = 0
    keys = 0
    async for key in admin.scan_iter(match=f"{backend.prefix}::*", count=1000):
        usage = await admin.memory_usage(key, samples=0)
        total += int(usage or 0)
        keys += 1
    return total / text_bytes, keys


async def run_workload(workload: Workload, backend: Backend, budget_s: float) -> dict[str, Any]:
    """Run ``workload`` once on ``backend`` and return its figures."""
    await backend.start(workload)
    try:
        async with asyncio.timeout(budget_s):
            return await _run(workload, backend)
    except TimeoutError:
        raise BenchError(
            f"workload {workload.name} did not finish within {budget_s:.0f} s"
        ) from None
    finally:
        await backend.close()


async def _run(workload: Workload, backend: Backend) -> dict[str, Any]:
    tally = Tally()
    lag: list[float] = []
    result: dict[str, Any] = {}
    if backend.admin is not None and not workload.replay:
        await backend.admin.config_resetstat()
    setup_start = time.perf_counter()
    producers = await _open_all(backend, workload.streams)
    if workload.replay:
        # c: the stream is written and finished before the measured part begins.
        for producer in producers:
            await _produce(producer, workload, now_us(), 0.0, lag)
        if backend.admin is not None:
            await backend.admin.config_resetstat()
        setup_s = time.perf_counter() - setup_start
        before = Usage.now()
        start_us = now_us()
        with Recording(start_us) as recording:
            await asyncio.gather(
                *(
                    _consume(backend, p.stream_id, workload.chunks, tally, live=False)
                    for p in producers
                    for _ in range(workload.consumers)
                )
            )
    else:
        consumers = [
            asyncio.create_task(_consume(backend, p.stream_id, workload.chunks, tally, live=True))
            for p in producers
            for _ in range(workload.consumers)
        ]
        setup_s = time.perf_counter() - setup_start
        await asyncio.sleep(SETTLE_S)
        before = Usage.now()
        start_us = now_us()
        with Recording(start_us) as recording:
            streams = len(producers)
            writers = [
                asyncio.create_task(
                    _produce(p, workload, start_us, i / streams / (workload.rate or 1), lag)
                )
                for i, p in enumerate(producers)
            ]
            try:
                await asyncio.gather(*writers, *consumers)
            finally:
                for task in (*writers, *consumers):
                    task.cancel()
                await asyncio.gather(*writers, *consumers, return_exceptions=True)
    after = Usage.now()
    # CPU % is over the whole measured window (until every consumer has ended), which can
    # be a little longer than wall_s (until the last chunk arrived).
    window_s = (now_us() - start_us) / 1_000_000
    wall_s = (tally.last_seen_us - start_us) / 1_000_000
    cpu_s = after.cpu_s - before.cpu_s
    total_chunks = workload.streams * workload.chunks
    result.update(
        total_chunks=total_chunks,
        deliveries=tally.deliveries,
        messages=tally.messages,
        setup_s=round(setup_s, 4),
        wall_s=round(wall_s, 4),
        chunks_per_s=round(total_chunks / wall_s) if wall_s > 0 else None,
        cpu_s=round(cpu_s, 3),
        cpu_pct=round(cpu_s / window_s * 100, 1) if window_s > 0 else None,
        cpu_window_s=round(window_s, 4),
        peak_rss_mb=round(after.peak_rss_mb, 1),
    )
    latencies = sorted(tally.latencies_us)
    if latencies:
        result.update(
            lat_p50_ms=round(percentile(latencies, 50) / 1000, 3),
            lat_p99_ms=round(percentile(latencies, 99) / 1000, 3),
            lat_max_ms=round(latencies[-1] / 1000, 3),
        )
    else:
        result.update(lat_p50_ms=None, lat_p99_ms=None, lat_max_ms=None)
    # Latency over time (issue 14): whether the tail is periodic, and what stalls the loop.
    result.update(recording.report(tally.arrivals_us, tally.latencies_us))
    ideal = workload.ideal_s
    result["ideal_s"] = ideal
    result["kept_up"] = None if ideal is None else wall_s <= ideal * KEPT_UP_FACTOR
    result["producer_lag_max_ms"] = round(max(lag), 3) if lag and ideal is not None else None
    commands = await _redis_commands(backend)
    if commands is None:
        result.update(redis_calls_per_chunk=None, redis_commands=None)
    else:
        total, per_command = commands
        result["redis_calls_per_chunk"] = round(total / total_chunks, 4)
        result["redis_commands"] = dict(sorted(per_command.items(), key=lambda kv: -kv[1]))
    if workload.replay:
        ratio = await _memory_ratio(backend, total_chunks * 16)
        result["redis_mem_ratio"] = None if ratio is None else round(ratio[0], 3)
        result["redis_keys"] = None if ratio is None else ratio[1]
    return result


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _versions(redis_url: str | None) -> dict[str, Any]:
    import hiredis

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "hiredis": hiredis.__version__,
        "hiredis_parser": redis.utils.HIREDIS_AVAILABLE,
        "commit": commit(),
    }
    if redis_url:
        with redis.Redis.from_url(redis_url) as client:
            info["redis_server"] = client.info("server")["redis_version"]
    return info


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--backend", choices=BACKENDS, default="redis")
    parser.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    parser.add_argument("--runs", type=int, default=1, help="runs (each in a fresh process)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the workload (0..1]")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--gc",
        choices=("default", "tuned"),
        default="default",
        help="tuned: chatscale.runtime.tune_gc() before the run, as chatscale serve does",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="chatscale setting override, e.g. stream_delta_coalesce_ms=0 (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
    return parser


def _budget(workload: Workload, timeout: float | None) -> float:
    if timeout is not None:
        return timeout
    return 300.0 + 5 * (workload.ideal_s or 0.0)


def run_once(args: argparse.Namespace, redis_url: str | None) -> dict[str, Any]:
    """One run in this process."""
    workload = WORKLOADS[args.workload].scaled(args.scale)
    backend = make_backend(args.backend, redis_url, setting_overrides(args.setting))
    head: dict[str, Any] = {
        "workload": workload.name,
        "backend": backend.name,
        "streams": workload.streams,
        "chunks_per_stream": workload.chunks,
        "consumers_per_stream": workload.consumers,
        "rate_per_stream": workload.rate,
        "scale": args.scale,
        "loop": args.loop,
        "gc": args.gc,
        "settings": setting_overrides(args.setting),
    }
    if args.gc == "tuned":
        tune_gc()
    coroutine = run_workload(workload, backend, _budget(workload, args.timeout))
    if args.loop == "uvloop":
        import uvloop

        figures = uvloop.run(coroutine)
    else:
        figures = asyncio.run(coroutine)
    return {**head, **figures}


_MEDIAN_FIELDS = (
    "setup_s",
    "wall_s",
    "chunks_per_s",
    "cpu_s",
    "cpu_pct",
    "peak_rss_mb",
    "lat_p50_ms",
    "lat_p99_ms",
    "lat_max_ms",
    "producer_lag_max_ms",
    "redis_calls_per_chunk",
    "redis_mem_ratio",
    "messages",
)
#: Series of one run: a summary keeps them only in ``runs`` (a median has no timeline).
_PER_RUN_FIELDS = ("timeline", "gc_pauses", "loop_lag")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the numeric figures of several runs (the runs are kept too)."""
    skip = {*_MEDIAN_FIELDS, *_PER_RUN_FIELDS}
    summary = {k: v for k, v in runs[0].items() if k not in skip}
    for name in _MEDIAN_FIELDS:
        values = [r[name] for r in runs if isinstance(r.get(name), int | float)]
        summary[name] = round(median(values), 4) if values else None
    kept = [r["kept_up"] for r in runs if r.get("kept_up") is not None]
    summary["kept_up"] = (sum(kept) * 2 > len(kept)) if kept else None
    summary["kept_up_runs"] = f"{sum(kept)}/{len(kept)}" if kept else None
    summary["runs"] = runs
    return summary


def _child(args: argparse.Namespace, redis_url: str | None) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), args.workload, "--runs", "1"]
    argv += ["--backend", args.backend, "--scale", str(args.scale), "--loop", args.loop]
    argv += ["--gc", args.gc]
    for pair in args.setting:
        argv += ["--setting", pair]
    if redis_url:
        argv += ["--redis-url", redis_url]
    if args.timeout is not None:
        argv += ["--timeout", str(args.timeout)]
    budget = _budget(WORKLOADS[args.workload], args.timeout) + 60
    done = subprocess.run(argv, capture_output=True, text=True, timeout=budget, check=False)
    if done.returncode != 0:
        raise BenchError(f"run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, print one JSON object (exit 1 with an error object)."""
    args = _parser().parse_args(argv)
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    server: PrivateRedis | None = None
    redis_url: str | None = args.redis_url
    try:
        if redis_url is None and args.backend in {"redis", "baseline"}:
            server = PrivateRedis()
            server.start()
            redis_url = server.url
        if args.runs == 1:
            output = run_once(args, redis_url)
        else:
            output = summarise([_child(args, redis_url) for _ in range(args.runs)])
        output["versions"] = _versions(redis_url if args.backend in {"redis", "baseline"} else None)
        print(json.dumps(output))
        return 0
    except (BenchError, ChatscaleError, ValueError, redis.RedisError, OSError) as exc:
        print(json.dumps({"workload": args.workload, "backend": args.backend, "error": str(exc)}))
        return 1
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
