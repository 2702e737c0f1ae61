"""Client CPU per Redis command: chatscale's client as built (commands packed by hiredis,
:mod:`chatscale.redis.connections`) against the same client with redis-py's own connection
class, which packs in Python.

    .venv/bin/python bench/command_cpu.py [--rounds 6] [--commands 20000] [--tasks 50]

One process, one private ``redis-server`` (bench._common.PrivateRedis). Each round runs every
command kind through both clients, one after the other in alternating order, ``--commands``
commands from ``--tasks`` concurrent tasks; the figure is this process's CPU (user + system,
``time.process_time``) per command, whose only difference between the two clients is the
packer. Reported: the median per kind and client over the rounds, and their difference.
One JSON object, kept in bench/results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import PrivateRedis, median, plain_redis_py  # noqa: E402
from bench.http_client import add_out_option, keep_result  # noqa: E402

from chatscale.config import load_settings  # noqa: E402
from chatscale.redis import connect  # noqa: E402

_SCRIPT = "return {KEYS[1], ARGV[1]}"
_VALUE = b'{"role": "assistant", "content": "' + b"x" * 160 + b'"}'

Command = Callable[[Any, int], Awaitable[Any]]


def _kinds(prefix: str, sha: str) -> dict[str, Command]:
    """The commands measured, as a session, cache or rate-limit store sends them."""

    def key(i: int) -> str:
        return f"{prefix}:k{i % 1000}"

    return {
        "GET (200 B value)": lambda c, i: c.get(key(i)),
        "SET EX (200 B value)": lambda c, i: c.set(key(i), _VALUE, ex=3600),
        "HMGET (3 fields)": lambda c, i: c.hmget(key(i) + ":h", "status", "owner", "seq"),
        "EVALSHA (2 keys, 6 arguments)": lambda c, i: c.evalsha(
            sha, 2, key(i), key(i + 1), "a", 1, 2.5, _VALUE, i, "moving-window"
        ),
    }


async def _drive(client: Any, command: Command, commands: int, tasks: int) -> float:
    """CPU seconds of this process per command, ``commands`` over ``tasks`` tasks."""
    each = commands // tasks

    async def worker(offset: int) -> None:
        for i in range(offset, offset + each):
            await command(client, i)

    began = time.process_time()
    await asyncio.gather(*(worker(t * each) for t in range(tasks)))
    return (time.process_time() - began) / (each * tasks)


async def run(url: str, rounds: int, commands: int, tasks: int) -> dict[str, Any]:
    settings = load_settings(use_redis=True, redis_uri=url)
    assert settings.redis is not None
    conn = await connect(settings.redis)
    clients: dict[str, Any] = {"hiredis": conn.client, "redis-py": plain_redis_py(settings.redis)}
    try:
        sha = await conn.client.script_load(_SCRIPT)
        kinds = _kinds("bench-cpu", sha)
        per: dict[str, dict[str, list[float]]] = {k: {c: [] for c in clients} for k in kinds}
        for command in kinds.values():  # warm-up: connections, caches
            for client in clients.values():
                await _drive(client, command, 2 * tasks, tasks)
        for index in range(rounds):
            order = list(clients) if index % 2 == 0 else list(reversed(clients))
            for name, command in kinds.items():
                for label in order:
                    cost = await _drive(clients[label], command, commands, tasks)
                    per[name][label].append(cost * 1e6)
    finally:
        await clients["redis-py"].aclose()
        await conn.close()
    summary = {}
    for name, by in per.items():
        ours, theirs = median(by["hiredis"]), median(by["redis-py"])
        summary[name] = {
            "hiredis_us": round(ours, 2),
            "redis_py_us": round(theirs, 2),
            "saved_us": round(theirs - ours, 2),
            "saved_share": round((theirs - ours) / theirs, 3),
        }
    return {"summary": summary, "runs_us": per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=50)
    add_out_option(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.commands < args.tasks or args.tasks < 1:
        parser.error("--rounds and --tasks must be positive, --commands at least --tasks")
    private = PrivateRedis()
    private.start()
    try:
        result = asyncio.run(run(private.url, args.rounds, args.commands, args.tasks))
    finally:
        private.stop()
    print(json.dumps(result["summary"], indent=1))
    options = {"rounds": args.rounds, "commands": args.commands, "tasks": args.tasks}
    print("kept in", keep_result("command-cpu", options, result, args.out))


if __name__ == "__main__":
    main()
