"""Durable Streams: chatscale (memory, Redis, three instances on Redis) against the Node
reference server, on the workloads of issue 11.

Each system runs alone, as its own processes on loopback ports (started and stopped here;
Redis is a private ``redis-server``), and meets the same client (this process):

* ``append1000``: ``--writers`` clients appending 256-byte ``text/plain`` messages, spread
  round-robin over 1,000 streams, as fast as answers come, for ``--seconds``;
* ``append_rate``: the same appends at a fixed offered rate (``--rate`` per second, open loop:
  latency counts from the scheduled send), so that server CPU per append compares at equal
  load, notably one instance against three; ``append_rate_third`` (one instance, when three
  are measured too) offers a third of it, each of the three instances' share;
* ``sse1`` / ``sse1000``: 1 and 1,000 SSE subscribers on one stream, a writer appending
  256-byte messages at ``--sse-rate`` / ``--sse1000-rate`` per second for ``--seconds``; a
  delivery's latency is its receipt by a subscriber minus the writer's send (one process, one
  clock; the subscribers are raw asyncio sockets, the cheapest client, and the client's own
  CPU share during the phase is reported to show whether it distorts the latency);
* ``catchup1000``: 1,000 clients each reading a 200 x 1 KB stream from ``-1`` to its tail
  (``--catchup-concurrency`` at a time): total time, per-client read time p50/p99.

Reported per system and workload: operations per second, latency percentiles, server CPU per
operation (``/proc/<pid>/stat``, summed over the system's server processes), and peak RSS
(``VmHWM``); on Redis also Redis commands and Redis CPU per operation (``INFO commandstats``
and ``INFO cpu`` deltas). The system ``chatscale-redis-x3`` is three ``chatscale serve``
processes on one Redis, the client spreading requests round-robin over them; it runs the
append workloads only. ``chatscale-cluster`` (not run by default) is one ``chatscale serve``
on a Redis Cluster of three masters with a replica each (``tests/harness``); its Redis figures
are summed over the masters. Prints one JSON object and a markdown table, and keeps the run
in ``bench/results``.

    .venv/bin/python bench/durable_streams.py --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import PrivateRedis, _free_port, percentile  # noqa: E402
from bench.http_client import add_out_option, keep_result, raise_nofile  # noqa: E402

NODE_DIR = ROOT / "bench" / "durable"
TICK_S = os.sysconf("SC_CLK_TCK")
SYSTEMS = ("node", "chatscale", "chatscale-redis", "chatscale-redis-x3", "chatscale-cluster")
WORKLOADS = ("append1000", "append_rate", "sse1", "sse1000", "catchup1000")
STREAMS = 1000
APPEND_BYTES = 256
CATCHUP_MESSAGES = 200
CATCHUP_BYTES = 1024
#: A message of the live workloads: ``m<9 digits>.`` then padding, 256 bytes in all.
MARK = re.compile(rb"m(\d{9})\.")
SCRIPT_CALLS = ("cmdstat_eval", "cmdstat_evalsha", "cmdstat_eval_ro", "cmdstat_evalsha_ro")
NEXT_OFFSET = re.compile(rb'"streamNextOffset":"([^"]+)"')


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S


def peak_rss_mb(pid: int) -> float:
    """Peak resident set of process ``pid`` (``VmHWM``), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: A server's command line and environment, given the loopback port it is to listen on.
Command = Callable[[int], tuple[list[str], dict[str, str]]]


class Server:
    """One server process on a free loopback port, ready once it answers a HEAD under the
    protocol's base path (``label`` names it in errors)."""

    def __init__(self, label: str, command: Command) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv, env = command(self.port)
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.head(f"{self.url}/v1/stream/none", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{label} did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def served(kind: str, redis_url: str | None, prefix: str = "") -> Command:
    """The command of the Node reference server (``kind`` "node") or of ``chatscale
    serve`` with Durable Streams open (in memory, or on ``redis_url``)."""

    def command(port: int) -> tuple[list[str], dict[str, str]]:
        # The chatscale of this checkout, whatever the virtualenv has installed.
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
            ),
        }
        if kind == "node":
            if not (NODE_DIR / "node_modules").is_dir():
                subprocess.run(
                    ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                    cwd=NODE_DIR,
                    check=True,
                )
            env["PORT"] = str(port)
            return ["node", str(NODE_DIR / "ref_server.mjs")], env
        argv = [str(Path(sys.executable).parent / "chatscale"), "serve", "--port", str(port)]
        env |= {
            "DURABLE_STREAMS": "true",
            "DURABLE_STREAMS_AUTH": "none",
            "SESSION_SECRET": "durable-bench-secret-0123456789abcdef0123",
            "LOG_LEVEL": "WARNING",
        }
        if redis_url is not None:
            env |= {
                "USE_REDIS": "true",
                "REDIS_URI": redis_url,
                "REDIS_KEY_PREFIX": prefix or f"bench{port}",
            }
            if "," in redis_url:  # every node of a Cluster
                env["USE_REDIS_CLUSTER"] = "true"
        return argv, env

    return command


class System:
    """The processes under test: one or three servers, and Redis when there is one; or
    ``servers`` already started (without Redis)."""

    def __init__(self, name: str, servers: list[Server] | None = None) -> None:
        self.name = name
        self.redis: PrivateRedis | None = None
        self.servers: list[Server] = list(servers or [])
        self.info: redis.Redis | None = None
        #: On Cluster: the topology (tests/harness), and a client of each master.
        self.cluster: Any = None
        self.masters: list[redis.Redis] = []
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        try:
            url: str | None = None
            if servers is None and name.startswith("chatscale-redis"):
                self.redis = PrivateRedis()
                self.redis.start()
                self.info = redis.Redis.from_url(self.redis.url)
                url = self.redis.url
            elif servers is None and name == "chatscale-cluster":
                from tests.harness.servers import start_cluster

                self._workdir = tempfile.TemporaryDirectory(prefix="chatscale-bench-cluster-")
                self.cluster = start_cluster(Path(self._workdir.name))
                self.masters = [redis.Redis.from_url(m.url()) for m in self.cluster.masters()]
                url = ",".join(self.cluster.urls())
            count = 0 if servers is not None else 3 if name.endswith("-x3") else 1
            kind = "node" if name == "node" else "chatscale"
            for _ in range(count):
                self.servers.append(Server(kind, served(kind, url, "b")))
        except BaseException:
            self.stop()
            raise
        self.urls = [s.url for s in self.servers]
        self.idle_cpu_share = 0.0
        self.idle_redis_cpu_share = 0.0

    async def measure_idle(self, seconds: float) -> None:
        """CPU the system spends doing nothing (timers, heartbeats, Redis's cron), per
        second: subtracted for the marginal CPU per operation."""
        _, _, rcpu0 = self.redis_counters()
        cpu0, t0 = self.cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        self.idle_cpu_share = (self.cpu() - cpu0) / elapsed
        self.idle_redis_cpu_share = (self.redis_counters()[2] - rcpu0) / elapsed

    def url(self, i: int) -> str:
        """The server for the ``i``-th request (round-robin)."""
        return self.urls[i % len(self.urls)]

    def cpu(self) -> float:
        return sum(cpu_s(s.proc.pid) for s in self.servers)

    def peak_rss_mb(self) -> float:
        return sum(peak_rss_mb(s.proc.pid) for s in self.servers)

    def redis_counters(self) -> tuple[int, int, float]:
        """Redis so far: commands executed (those Lua scripts run included, INFO not),
        script calls (EVAL, EVALSHA), CPU seconds."""
        calls, scripts, seconds = 0, 0, 0.0
        for client in [self.info] if self.info is not None else self.masters:
            stats: dict[str, Any] = client.info("commandstats")
            calls += sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
            scripts += sum(int(stats.get(k, {}).get("calls", 0)) for k in SCRIPT_CALLS)
            cpu: dict[str, Any] = client.info("cpu")
            seconds += float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
        return calls, scripts, seconds

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.info is not None:
            self.info.close()
        if self.redis is not None:
            self.redis.stop()
        for client in self.masters:
            client.close()
        if self.cluster is not None:
            self.cluster.stop()
        if self._workdir is not None:
            self._workdir.cleanup()


async def measured(
    system: System, body: Callable[[], Awaitable[tuple[int, list[float]]]]
) -> dict[str, Any]:
    """Run ``body`` (which returns the operation count and latencies in ms) and summarise
    it with the server's, the client's and Redis' resource use over the same interval."""
    calls0, scripts0, rcpu0 = system.redis_counters()
    cpu0, client0, t0 = system.cpu(), client_cpu_s(), time.monotonic()
    ops, latencies = await body()
    elapsed = time.monotonic() - t0
    cpu, client = system.cpu() - cpu0, client_cpu_s() - client0
    calls1, scripts1, rcpu1 = system.redis_counters()
    ordered = sorted(latencies)
    result: dict[str, Any] = {
        "ops": ops,
        "seconds": round(elapsed, 2),
        "ops_per_s": round(ops / elapsed, 1),
        "latency_ms_p50": round(percentile(ordered, 50), 2),  # type: ignore[arg-type]
        "latency_ms_p99": round(percentile(ordered, 99), 2),  # type: ignore[arg-type]
        "server_cpu_us_per_op": round(1e6 * cpu / max(1, ops), 1),
        "server_cpu_us_per_op_marginal": round(
            1e6 * max(0.0, cpu - system.idle_cpu_share * elapsed) / max(1, ops), 1
        ),
        "server_cpu_share": round(cpu / elapsed, 3),
        "client_cpu_share": round(client / elapsed, 3),
    }
    if system.info is not None or system.masters:
        result["redis_commands_per_op"] = round((calls1 - calls0) / max(1, ops), 2)
        result["redis_scripts_per_op"] = round((scripts1 - scripts0) / max(1, ops), 2)
        result["redis_cpu_us_per_op"] = round(1e6 * (rcpu1 - rcpu0) / max(1, ops), 1)
        redis_busy = max(0.0, rcpu1 - rcpu0 - system.idle_redis_cpu_share * elapsed)
        result["redis_cpu_us_per_op_marginal"] = round(1e6 * redis_busy / max(1, ops), 1)
    return result


class Connection:
    """A minimal HTTP/1.1 keep-alive client on one socket: much cheaper than httpx, so the
    client's CPU takes less of the shared cores from the server under test."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = "text/plain"
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        """(status, lower-case headers, body) of one request."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if method in ("PUT", "POST"):
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(b":")
                headers[key.strip().lower()] = value.strip()
        if b"content-length" in headers:
            content = await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size + 2))
            await self.reader.readuntil(b"\r\n")
            content = b"".join(p[:-2] for p in parts)
        else:
            content = b""
        if headers.get(b"connection") == b"close":
            self.close()
        return status, headers, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _check(status: int, what: str) -> None:
    if not 200 <= status < 300:
        raise RuntimeError(f"{what}: HTTP {status}")


class Pool:
    """Idle keep-alive connections per server; a request takes one or opens one."""

    def __init__(self) -> None:
        self.idle: dict[str, list[Connection]] = {}

    async def request(
        self, url: str, method: str, path: str, body: bytes = b""
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        idle = self.idle.setdefault(url, [])
        connection = idle.pop() if idle else Connection(url)
        try:
            answer = await connection.request(method, path, body)
        except BaseException:
            connection.close()
            raise
        idle.append(connection)
        return answer

    def close(self) -> None:
        for idle in self.idle.values():
            for connection in idle:
                connection.close()
        self.idle.clear()


async def _create_streams(system: System, pool: Pool, tag: str) -> list[str]:
    paths = [f"/v1/stream/{tag}-{i}-{time.time_ns()}" for i in range(STREAMS)]
    lock = asyncio.Semaphore(50)

    async def create(i: int) -> None:
        async with lock:
            status, _, _ = await pool.request(system.url(i), "PUT", paths[i])
            _check(status, "PUT")

    await asyncio.gather(*(create(i) for i in range(STREAMS)))
    return paths


async def append_closed(system: System, writers: int, seconds: float) -> dict[str, Any]:
    """``append1000``: as fast as answers come."""
    message = b"a" * APPEND_BYTES
    pool = Pool()
    try:
        paths = await _create_streams(system, pool, "a")
        latencies: list[float] = []
        counter = iter(range(10**12))

        async def body() -> tuple[int, list[float]]:
            stop = time.monotonic() + seconds

            async def writer() -> None:
                while time.monotonic() < stop:
                    i = next(counter)
                    t0 = time.perf_counter()
                    status, _, _ = await pool.request(
                        system.url(i), "POST", paths[i % STREAMS], message
                    )
                    _check(status, "POST")
                    latencies.append((time.perf_counter() - t0) * 1000)

            await asyncio.gather(*(writer() for _ in range(writers)))
            return len(latencies), latencies

        return await measured(system, body) | {"writers": writers}
    finally:
        pool.close()


async def append_rate(system: System, rate: float, seconds: float) -> dict[str, Any]:
    """``append_rate``: ``rate`` appends per second, open loop, latency from the schedule."""
    message = b"r" * APPEND_BYTES
    cap = 500
    pool = Pool()
    try:
        paths = await _create_streams(system, pool, "r")
        latencies: list[float] = []
        dropped = 0
        failed: list[str] = []

        async def one(i: int, due: float) -> None:
            try:
                status, _, _ = await pool.request(
                    system.url(i), "POST", paths[i % STREAMS], message
                )
                _check(status, "POST")
            except Exception as exc:  # counted and reported, never silently lost
                failed.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append((time.perf_counter() - due) * 1000)

        async def body() -> tuple[int, list[float]]:
            nonlocal dropped
            total = int(rate * seconds)
            start = time.perf_counter()
            tasks: set[asyncio.Task[None]] = set()
            for i in range(total):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(tasks) >= cap:
                    dropped += 1  # the server is this far behind: not offered
                    continue
                task = asyncio.create_task(one(i, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            return len(latencies), latencies

        figures = await measured(system, body)
        return figures | {
            "offered_per_s": rate,
            "dropped": dropped,
            "failed": len(failed),
            "failures": sorted(set(failed))[:5],
        }
    finally:
        pool.close()


class Subscriber:
    """One SSE reader on a raw socket: records each message's receipt time; reconnects
    from the last control event's offset when the server ends the response."""

    def __init__(self, url: str, path: str, offset: str, sent: dict[int, float]) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.path = path
        self.offset = offset
        self.sent = sent
        self.latencies: list[float] = []
        self.ready = asyncio.Event()
        self.done = False

    async def run(self) -> None:
        while not self.done:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                request = (
                    f"GET {self.path}?offset={self.offset}&live=sse HTTP/1.1\r\n"
                    f"Host: {self.host}\r\nAccept: text/event-stream\r\n\r\n"
                )
                writer.write(request.encode())
                await reader.readuntil(b"\r\n\r\n")
                tail = b""
                while not self.done:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    now = time.perf_counter()
                    text = tail + chunk
                    for match in MARK.finditer(text, max(0, len(tail) - 10)):
                        seq = int(match.group(1))
                        if seq in self.sent:
                            self.latencies.append((now - self.sent[seq]) * 1000)
                    offsets = NEXT_OFFSET.findall(text)
                    if offsets:
                        self.offset = offsets[-1].decode()
                        self.ready.set()
                    tail = text[-64:]
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()


async def sse(system: System, subscribers: int, rate: float, seconds: float) -> dict[str, Any]:
    """``sse1`` / ``sse1000``: deliveries per second and their latency."""
    sent: dict[int, float] = {}
    url = system.url(0)
    pool = Pool()
    try:
        path = f"/v1/stream/sse-{time.time_ns()}"
        status, headers, _ = await pool.request(url, "PUT", path)
        _check(status, "PUT")
        start = headers[b"stream-next-offset"].decode()
        readers = [Subscriber(url, path, start, sent) for _ in range(subscribers)]
        tasks: list[asyncio.Task[None]] = []
        for i, reader in enumerate(readers):
            tasks.append(asyncio.create_task(reader.run()))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # no accept-queue overflow
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in readers)), 60)
        await asyncio.sleep(0.5)

        async def body() -> tuple[int, list[float]]:
            total = int(rate * seconds)
            begin = time.perf_counter()
            for seq in range(total):
                delay = begin + seq / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                message = f"m{seq:09d}.".encode().ljust(APPEND_BYTES, b"s")
                sent[seq] = time.perf_counter()
                _check((await pool.request(url, "POST", path, message))[0], "POST")
            wanted = total * subscribers
            deadline = time.monotonic() + 30
            while sum(len(r.latencies) for r in readers) < wanted:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            latencies = [v for r in readers for v in r.latencies]
            return len(latencies), latencies

        try:
            result = await measured(system, body)
        finally:
            for reader in readers:
                reader.done = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        pool.close()
    expected = int(rate * seconds) * subscribers
    return result | {"subscribers": subscribers, "rate": rate, "expected": expected}


async def catchup(system: System, clients: int, concurrency: int) -> dict[str, Any]:
    """``catchup1000``: ``clients`` reads of a 200 x 1 KB stream from ``-1`` to its tail."""
    url = system.url(0)
    size = CATCHUP_MESSAGES * CATCHUP_BYTES
    pool = Pool()
    try:
        path = f"/v1/stream/catchup-{time.time_ns()}"
        _check((await pool.request(url, "PUT", path))[0], "PUT")
        for i in range(CATCHUP_MESSAGES):
            message = f"{i:08d}".encode().ljust(CATCHUP_BYTES, b"c")
            _check((await pool.request(url, "POST", path, message))[0], "POST")
        lock = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def client(i: int) -> None:
            async with lock:
                t0 = time.perf_counter()
                offset, got = "-1", 0
                while True:
                    status, headers, content = await pool.request(
                        system.url(i), "GET", f"{path}?offset={offset}"
                    )
                    _check(status, "GET")
                    got += len(content)
                    offset = headers[b"stream-next-offset"].decode()
                    if headers.get(b"stream-up-to-date") == b"true":
                        break
                assert got == size, got
                latencies.append((time.perf_counter() - t0) * 1000)

        async def body() -> tuple[int, list[float]]:
            await asyncio.gather(*(client(i) for i in range(clients)))
            return len(latencies), latencies

        result = await measured(system, body)
    finally:
        pool.close()
    return result | {"clients": clients, "concurrency": concurrency}


async def run_system(name: str, args: argparse.Namespace) -> dict[str, Any]:
    system = System(name)
    try:
        await system.measure_idle(args.idle_seconds)
        results: dict[str, Any] = {
            "idle_cpu_share": round(system.idle_cpu_share, 4),
            "idle_redis_cpu_share": round(system.idle_redis_cpu_share, 4),
        }
        wanted = args.workloads
        if "append1000" in wanted:
            results["append1000"] = await append_closed(system, args.writers, args.seconds)
        if "append_rate" in wanted:
            results["append_rate"] = await append_rate(system, args.rate, args.seconds)
            if name == "chatscale-redis" and "chatscale-redis-x3" in args.systems:
                # What each of three instances gets at the same total: their CPU per append
                # is compared with this (a process's cost per append grows as its load falls).
                third = await append_rate(system, args.rate / 3, args.seconds)
                results["append_rate_third"] = third
        if not name.endswith("-x3"):
            if "sse1" in wanted:
                results["sse1"] = await sse(system, 1, args.sse_rate, args.seconds)
            if "sse1000" in wanted:
                results["sse1000"] = await sse(system, 1000, args.sse1000_rate, args.seconds)
            if "catchup1000" in wanted:
                results["catchup1000"] = await catchup(system, 1000, args.catchup_concurrency)
        results["peak_rss_mb"] = round(system.peak_rss_mb(), 1)
        return results
    finally:
        system.stop()


LABELS = {
    "node": "Node reference",
    "chatscale": "chatscale, memory",
    "chatscale-redis": "chatscale, Redis",
    "chatscale-redis-x3": "chatscale, Redis, 3 instances",
    "chatscale-cluster": "chatscale, Redis Cluster (3 masters, 3 replicas)",
}


def _redis_calls(r: dict[str, Any]) -> str:
    if "redis_commands_per_op" not in r:
        return ""
    return f"{r['redis_commands_per_op']} ({r['redis_scripts_per_op']})"


def _redis_cpu(r: dict[str, Any]) -> str:
    if "redis_cpu_us_per_op" not in r:
        return ""
    return f"{r['redis_cpu_us_per_op']:,} ({r['redis_cpu_us_per_op_marginal']:,})"


def markdown(results: dict[str, Any]) -> str:
    """The run as the table of docs/benchmarks.md."""
    lines = [
        "| system | workload | ops/s | p50 ms | p99 ms | server CPU µs/op (above idle) | "
        "Redis cmds (scripts)/op | Redis CPU µs/op (above idle) | client CPU share | "
        "peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system, workloads in results.items():
        for workload, r in workloads.items():
            if not isinstance(r, dict):
                continue
            lines.append(
                f"| {LABELS.get(system, system)} | {workload} | {r['ops_per_s']:,} "
                f"| {r['latency_ms_p50']} | {r['latency_ms_p99']} "
                f"| {r['server_cpu_us_per_op']:,} ({r['server_cpu_us_per_op_marginal']:,}) "
                f"| {_redis_calls(r)} | {_redis_cpu(r)} | {r['client_cpu_share']} "
                f"| {workloads['peak_rss_mb']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        default=",".join(s for s in SYSTEMS if s != "chatscale-cluster"),
        help="of " + ", ".join(SYSTEMS) + " (all but the Cluster by default)",
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="of " + ", ".join(WORKLOADS)
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per timed workload")
    parser.add_argument("--writers", type=int, default=50, help="append1000 writers")
    parser.add_argument("--rate", type=float, default=300.0, help="append_rate appends/s")
    parser.add_argument("--sse-rate", type=float, default=20.0, help="sse1 messages/s")
    parser.add_argument("--sse1000-rate", type=float, default=2.0, help="sse1000 messages/s")
    parser.add_argument("--catchup-concurrency", type=int, default=100)
    parser.add_argument(
        "--idle-seconds", type=float, default=5.0, help="idle CPU measured before the workloads"
    )
    add_out_option(parser)
    args = parser.parse_args()
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = set(kinds) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"--servers: unknown {', '.join(sorted(unknown))}")
    if "node" in kinds and shutil.which("node") is None:
        raise SystemExit("node is not installed")
    raise_nofile(8192)

    args.systems = kinds
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if set(args.workloads) - set(WORKLOADS):
        raise SystemExit(
            f"--workloads: unknown {', '.join(sorted(set(args.workloads) - set(WORKLOADS)))}"
        )

    async def run() -> dict[str, Any]:
        return {kind: await run_system(kind, args) for kind in kinds}

    result = asyncio.run(run())
    print(json.dumps(result, indent=2))
    print(markdown(result))
    options = {k: v for k, v in vars(args).items() if k not in ("out", "systems")}
    print(f"kept in {keep_result('durable-streams', options, result, args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
