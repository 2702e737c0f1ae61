"""CPU per round trip of the stream writer's append call, by the way it reaches Redis.

    .venv/bin/python bench/writer_round_trip.py [--calls 20000] [--batches 5] [--rounds 3]

One ``append.lua``-shaped call (``--batches`` jobs' keys and 200-byte arguments, a small
script that sets one field per key) sent ``--calls`` times in a row, one at a time, as the
writer does once per coalescing window, through:

* ``client_task_wait``: ``client.evalsha`` inside a task awaited with ``asyncio.wait`` and a
  timeout (the writer until commit ``44ca7fe``);
* ``client``: ``client.evalsha`` alone (redis-py's pool, retry wrapper, a task per socket
  write under a socket timeout, observability hooks);
* ``line``: :class:`chatscale.redis.line.Line` under ``asyncio.timeout`` (the writer now).

The client has chatscale's own settings (``chatscale.redis.client``: a socket timeout, the
health-check interval of ``REDIS_PING_INTERVAL``). Each way runs ``--rounds`` times,
alternating; CPU is this process's (``time.process_time``) over the calls. Prints one JSON
object and keeps it in bench/results. A private ``redis-server`` on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from bench._common import PrivateRedis, median  # noqa: E402
from bench.http_client import add_out_option, keep_result  # noqa: E402

from chatscale.config import load_settings  # noqa: E402
from chatscale.redis import connect  # noqa: E402
from chatscale.redis.line import Line  # noqa: E402

SCRIPT = (
    "local out = {} for i = 1, #KEYS do redis.call('HSET', KEYS[i], 'seq', ARGV[i + 2]) "
    "out[i] = 1 end return out"
)
DEADLINE_S = 5.0


async def _measure(
    ways: Mapping[str, Callable[[], Awaitable[Any]]], calls: int, rounds: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, call in ways.items():
            for _ in range(calls // 20):  # warm up
                await call()
            started = time.process_time()
            for _ in range(calls):
                await call()
            out[name].append(round(1e6 * (time.process_time() - started) / calls, 2))
    return out


async def run(url: str, calls: int, batches: int, rounds: int) -> dict[str, Any]:
    settings = load_settings(use_redis=True, redis_uri=url)
    assert settings.redis is not None
    connection = await connect(settings.redis)
    client: Any = connection.client
    try:
        sha = await client.script_load(SCRIPT)
        keys = [connection.keys.key(f"rt{i}").encode() for i in range(batches)]
        argv = [time.time(), b"PUBLISH", *(b"x" * 200 for _ in range(batches))]
        command = ("EVALSHA", sha, len(keys), *keys, *argv)
        line = Line(client.connection_pool)

        async def via_client() -> None:
            await client.evalsha(sha, len(keys), *keys, *argv)

        async def via_client_task_wait() -> None:
            task = asyncio.ensure_future(via_client())
            await asyncio.wait({task}, timeout=DEADLINE_S)
            task.result()

        async def via_line() -> None:
            async with asyncio.timeout(DEADLINE_S):
                await line.round_trip([command])

        ways = {"client_task_wait": via_client_task_wait, "client": via_client, "line": via_line}
        runs = await _measure(ways, calls, rounds)
        await line.close()
    finally:
        await connection.close()
    return {
        "calls": calls,
        "batches": batches,
        "rounds": rounds,
        "cpu_us_per_round_trip": {name: median(values) for name, values in runs.items()},
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    add_out_option(parser)
    args = parser.parse_args()
    with PrivateRedis() as redis_server:
        result = uvloop.run(run(redis_server.url, args.calls, args.batches, args.rounds))
    print(json.dumps(result, indent=1))
    options = {"calls": args.calls, "batches": args.batches, "rounds": args.rounds}
    print("kept in", keep_result("writer-round-trip", options, result, args.out))


if __name__ == "__main__":
    main()
