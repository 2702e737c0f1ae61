"""Durable Streams: chatscale (memory, and Redis) against the Node reference server.

Each server runs alone on a loopback port (started and stopped here; Redis is a private
``redis-server``), with the same client and the same three workloads:

* ``append``: ``--writers`` clients, each appending 100-byte ``text/plain`` messages to its
  own stream as fast as answers come, for ``--seconds``;
* ``catch-up``: ``--writers`` clients reading a 1,000-message stream (100 KB) from ``-1``
  again and again, for ``--seconds``;
* ``live``: ``--readers`` (50) long-poll readers on one stream, a writer appending 50 messages at
  20/s; a delivery's latency is the reader's receipt minus the writer's send.

Reported per server and workload: operations per second, latency percentiles, and the
server's CPU time per operation (``/proc/<pid>/stat``), the figure that depends least on the
shared machine. Prints one JSON object and keeps the run in ``bench/results``.

    .venv/bin/python bench/durable_streams.py --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import PrivateRedis, _free_port, percentile  # noqa: E402
from bench.http_client import add_out_option, keep_result  # noqa: E402

NODE_DIR = ROOT / "bench" / "durable"
MESSAGE = b"x" * 100
TICK_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S


class Server:
    """One server process on a free loopback port."""

    def __init__(self, kind: str, redis_url: str | None) -> None:
        self.kind = kind
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ}
        if kind == "node":
            if not (NODE_DIR / "node_modules").is_dir():
                subprocess.run(
                    ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                    cwd=NODE_DIR,
                    check=True,
                )
            argv = ["node", str(NODE_DIR / "ref_server.mjs")]
            env["PORT"] = str(self.port)
        else:
            argv = [
                str(Path(sys.executable).parent / "chatscale"),
                "serve",
                "--port",
                str(self.port),
            ]
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
                    "REDIS_KEY_PREFIX": f"bench{self.port}",
                }
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
        raise RuntimeError(f"{kind} did not start")

    def cpu(self) -> float:
        return cpu_s(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _summary(ops: int, seconds: float, latencies_ms: list[float], cpu: float) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    return {
        "ops": ops,
        "ops_per_s": round(ops / seconds, 1),
        "latency_ms_p50": round(percentile(ordered, 50), 2),  # type: ignore[arg-type]
        "latency_ms_p99": round(percentile(ordered, 99), 2),  # type: ignore[arg-type]
        "server_cpu_us_per_op": round(1e6 * cpu / max(1, ops), 1),
    }


async def append_workload(server: Server, writers: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=writers)
    ) as http:
        names = [f"/v1/stream/append-{i}-{time.time_ns()}" for i in range(writers)]
        for name in names:
            await http.put(name, headers={"Content-Type": "text/plain"})
        stop = time.monotonic() + seconds

        async def writer(name: str) -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                answer = await http.post(
                    name, headers={"Content-Type": "text/plain"}, content=MESSAGE
                )
                answer.raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1000)

        cpu0, t0 = server.cpu(), time.monotonic()
        await asyncio.gather(*(writer(n) for n in names))
        elapsed, cpu = time.monotonic() - t0, server.cpu() - cpu0
    return _summary(len(latencies), elapsed, latencies, cpu)


async def catch_up_workload(server: Server, readers: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    name = f"/v1/stream/catchup-{time.time_ns()}"
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=readers)
    ) as http:
        await http.put(name, headers={"Content-Type": "text/plain"})
        for _ in range(1000):
            await http.post(name, headers={"Content-Type": "text/plain"}, content=MESSAGE)
        stop = time.monotonic() + seconds

        async def reader() -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                answer = await http.get(name, params={"offset": "-1"})
                assert len(answer.content) == 100_000, len(answer.content)
                latencies.append((time.perf_counter() - t0) * 1000)

        cpu0, t0 = server.cpu(), time.monotonic()
        await asyncio.gather(*(reader() for _ in range(readers)))
        elapsed, cpu = time.monotonic() - t0, server.cpu() - cpu0
    return _summary(len(latencies), elapsed, latencies, cpu)


async def live_workload(server: Server, readers: int) -> dict[str, Any]:
    name = f"/v1/stream/live-{time.time_ns()}"
    sent: dict[str, float] = {}
    latencies: list[float] = []
    messages = 50
    limits = httpx.Limits(max_connections=readers + 2, max_keepalive_connections=readers + 2)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        created = await http.put(name, headers={"Content-Type": "text/plain"})
        start = created.headers["stream-next-offset"]

        async def reader() -> None:
            offset, got = start, 0
            while got < messages:
                answer = await http.get(name, params={"offset": offset, "live": "long-poll"})
                now = time.perf_counter()
                if answer.status_code == 200:
                    for i in range(0, len(answer.content), 8):
                        key = answer.content[i : i + 8].decode()
                        latencies.append((now - sent[key]) * 1000)
                        got += 1
                offset = answer.headers["stream-next-offset"]

        tasks = [asyncio.create_task(reader()) for _ in range(readers)]
        await asyncio.sleep(1.0)  # every reader waiting
        cpu0, t0 = server.cpu(), time.monotonic()
        for i in range(messages):
            key = f"{i:08d}"
            sent[key] = time.perf_counter()
            await http.post(name, headers={"Content-Type": "text/plain"}, content=key.encode())
            await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        elapsed, cpu = time.monotonic() - t0, server.cpu() - cpu0
    return _summary(len(latencies), elapsed, latencies, cpu) | {"deliveries": len(latencies)}


async def run(kinds: list[str], writers: int, readers: int, seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    redis: PrivateRedis | None = None
    try:
        for kind in kinds:
            redis_url = None
            if kind == "chatscale-redis":
                redis = PrivateRedis()
                redis.start()
                redis_url = redis.url
            server = Server("node" if kind == "node" else "chatscale", redis_url)
            try:
                results[kind] = {
                    "append": await append_workload(server, writers, seconds),
                    "catch_up": await catch_up_workload(server, writers, seconds),
                    "live": await live_workload(server, readers),
                }
            finally:
                server.stop()
                if redis is not None:
                    redis.stop()
                    redis = None
    finally:
        if redis is not None:
            redis.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default="node,chatscale,chatscale-redis")
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    add_out_option(parser)
    args = parser.parse_args()
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = set(kinds) - {"node", "chatscale", "chatscale-redis"}
    if unknown:
        raise SystemExit(f"--servers: unknown {', '.join(sorted(unknown))}")
    if "node" in kinds and shutil.which("node") is None:
        raise SystemExit("node is not installed")
    result = asyncio.run(run(kinds, args.writers, args.readers, args.seconds))
    print(json.dumps(result, indent=2))
    options = {
        "servers": kinds,
        "writers": args.writers,
        "readers": args.readers,
        "seconds": args.seconds,
    }
    print(f"kept in {keep_result('durable-streams', options, result, args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
