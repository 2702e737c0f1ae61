"""CPU per live message on the read side of the Redis streams backend (hub + reader).

    .venv/bin/python bench/hub_read.py [--streams 100] [--messages 200] [--rate 50] [--runs 3]

This process creates ``--streams`` jobs and subscribes to each through the stream manager's
public ``subscribe``; a child process then publishes ``--messages`` one-delta batches per job
straight on the jobs' channels, at ``--rate`` per job (jobs staggered across the period,
everything due within a millisecond sent in one pipeline), and a final event. Nothing is
written to the jobs' logs, so this process does only the read work: the pub/sub connection,
the hub's dispatch, the reader's ordering and the subscribers' iteration.

Prints one JSON object: ``cpu_us_per_msg`` is this process's CPU (``getrusage`` user +
system) from the first publication to the last final event, over the messages delivered;
``lat_*_ms`` run from the publisher's timestamp to the subscriber's receipt. With ``--runs
N`` each run is a fresh process and the object holds the medians plus every run. A private
``redis-server`` is started on a free loopback port (never 6379) and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis.asyncio  # noqa: E402
from bench._common import PrivateRedis, Usage, median, percentile  # noqa: E402

from chatscale.streams import codec  # noqa: E402

# --------------------------------------------------------------------------------------
# Publisher (a child process)
# --------------------------------------------------------------------------------------


async def publish(url: str, channels: list[str], messages: int, rate: float) -> None:
    """Publish ``messages`` batches ``[0, seq, ["<ns stamp>"]]`` per channel, then a final
    event, at ``rate`` per channel with the channels spread over the period."""
    client = redis.asyncio.Redis.from_url(url)
    period = 1.0 / rate
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    count = len(channels)
    # (due time, channel index, seq): seq messages + 1 is the final event.
    plan = sorted(
        (start + i * period / count + (seq - 1) * period, i, seq)
        for i in range(count)
        for seq in range(1, messages + 2)
    )
    pos = 0
    try:
        while pos < len(plan):
            wait = plan[pos][0] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            pipe = client.pipeline(transaction=False)
            now = loop.time()
            while pos < len(plan) and plan[pos][0] <= now + 0.001:
                _, i, seq = plan[pos]
                if seq > messages:
                    item: Any = ["done", {"finish_reason": "stop"}]
                else:
                    item = str(time.time_ns())
                pipe.publish(channels[i], codec.dumps([0, seq, [item]]))
                pos += 1
            await pipe.execute()
    finally:
        await client.aclose()


# --------------------------------------------------------------------------------------
# Subscriber (this process)
# --------------------------------------------------------------------------------------


async def run(url: str, streams: int, messages: int, rate: float) -> dict[str, Any]:
    """One run: subscribe, start the publisher, time until every stream ended."""
    from chatscale.config import load_settings
    from chatscale.redis import connect
    from chatscale.streams import create_stream_manager

    settings = load_settings(
        use_redis=True, redis_uri=url, redis_key_prefix=f"hubbench{time.time_ns()}"
    )
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection, instance_id="hub-bench")
    await manager.start()
    try:
        producers = [await manager.create(owner="bench", meta={}) for _ in range(streams)]
        ids = [p.job_id for p in producers]
        channels = [connection.keys.stream_events(i) for i in ids]
        latencies: list[int] = []
        received = 0
        started = asyncio.Event()

        async def consume(job_id: str) -> None:
            nonlocal received
            iterator = manager.subscribe(job_id).__aiter__()
            first = asyncio.ensure_future(iterator.__anext__())
            started.set()
            event = await first
            while True:
                received += 1
                if event.final:
                    return
                latencies.append(time.time_ns() - int(event.data["text"]))
                event = await iterator.__anext__()

        consumers = [asyncio.create_task(consume(i)) for i in ids]
        await asyncio.sleep(0.5)  # every subscription joined and read its (empty) log
        argv = [sys.executable, str(SCRIPT), "--publish", url]
        argv += ["--messages", str(messages), "--rate", str(rate), *channels]
        child = await asyncio.create_subprocess_exec(*argv)
        before, t0 = Usage.now(), time.monotonic()
        await asyncio.gather(*consumers)
        after, t1 = Usage.now(), time.monotonic()
        if await child.wait() != 0:
            raise RuntimeError("the publisher failed")
        for producer in producers:
            await producer.complete()
    finally:
        await manager.close()
        await connection.close()
    expected = streams * (messages + 1)
    if received != expected:
        raise RuntimeError(f"received {received} events, expected {expected}")
    latencies.sort()
    cpu = after.cpu_s - before.cpu_s
    return {
        "messages": received,
        "cpu_s": round(cpu, 4),
        "cpu_us_per_msg": round(cpu / received * 1e6, 2),
        "wall_s": round(t1 - t0, 3),
        "lat_p50_ms": round(percentile(latencies, 50) / 1e6, 3),
        "lat_p99_ms": round(percentile(latencies, 99) / 1e6, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200, help="messages per stream")
    parser.add_argument("--rate", type=float, default=50.0, help="messages/s per stream")
    parser.add_argument("--runs", type=int, default=1, help="runs (each in a fresh process)")
    parser.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    parser.add_argument("--publish", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("channels", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        asyncio.run(publish(args.publish, args.channels, args.messages, args.rate))
        return 0
    server: PrivateRedis | None = None
    url = args.redis_url
    try:
        if url is None:
            server = PrivateRedis()
            server.start()
            url = server.url
        head = {"streams": args.streams, "per_stream": args.messages, "rate": args.rate}
        if args.runs == 1:
            print(
                json.dumps(
                    {**head, **asyncio.run(run(url, args.streams, args.messages, args.rate))}
                )
            )
            return 0
        runs = []
        for _ in range(args.runs):
            child = [sys.executable, str(SCRIPT), "--redis-url", url]
            child += ["--streams", str(args.streams), "--messages", str(args.messages)]
            child += ["--rate", str(args.rate)]
            done = subprocess.run(child, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout))
        summary = {**head}
        for name in ("cpu_s", "cpu_us_per_msg", "wall_s", "lat_p50_ms", "lat_p99_ms"):
            summary[name] = round(median([r[name] for r in runs]), 4)
        summary["runs"] = runs
        print(json.dumps(summary))
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
