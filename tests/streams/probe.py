"""A quick probe of the stream workloads of WORKLOADS.md (the full benchmark is bench/).

Usage (against a throw-away server, e.g. ``redis-server --port 6411 --save '' --appendonly no``)::

    python -m tests.streams.probe redis://127.0.0.1:6411 a|b|b100|m|c [coalesce ms]

Prints chunks/s, latency p50/p99, process CPU, Redis commands per chunk (``CONFIG
RESETSTAT`` + ``INFO commandstats``), and for ``c`` the replay time and Redis memory of a
finished 20,000-chunk job relative to its text.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import Producer, StreamManager, create_stream_manager

SHAPES = {
    "a": (100, 1000, 0.0, 1),
    "b": (500, 200, 50.0, 1),
    "b100": (100, 200, 50.0, 1),
    "m": (500, 200, 50.0, 3),
}


def stamp() -> str:
    """A 16-byte chunk: 13 digits of a monotonic microsecond clock, then ``tok``."""
    return f"{time.monotonic_ns() // 1000:013d}tok"


async def produce(producer: Producer, chunks: int, rate: float) -> None:
    start = time.monotonic()
    for i in range(chunks):
        await producer.delta(stamp())
        if rate:
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elif i % 16 == 15:
            await asyncio.sleep(0)
    await producer.complete()


async def consume(manager: StreamManager, job_id: str, latencies: list[int]) -> None:
    async for event in manager.subscribe(job_id):
        now = time.monotonic_ns() // 1000
        if event.type == "delta":
            text = event.data["text"]
            latencies.extend(now - int(text[i : i + 13]) for i in range(0, len(text), 16))


async def workload(manager: StreamManager, client: object, name: str) -> None:
    streams, chunks, rate, readers = SHAPES[name]
    await client.config_resetstat()  # type: ignore[attr-defined]
    latencies: list[int] = []
    producers = [await manager.create(owner="probe") for _ in range(streams)]
    consumers = [
        asyncio.create_task(consume(manager, p.job_id, latencies))
        for p in producers
        for _ in range(readers)
    ]
    await asyncio.sleep(0.3)  # let every consumer subscribe first
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(produce(p, chunks, rate) for p in producers))
    await asyncio.gather(*consumers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = await client.info("commandstats")  # type: ignore[attr-defined]
    commands = sum(v["calls"] for v in stats.values())
    latencies.sort()
    total = streams * chunks
    print(
        f"{name}: {total / wall:,.0f} chunks/s, wall {wall:.2f} s, CPU {cpu / wall:.0%}, "
        f"p50 {latencies[len(latencies) // 2] / 1000:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] / 1000:.2f} ms, "
        f"{commands / total:.3f} Redis commands per chunk"
    )


async def resume(manager: StreamManager, client: object) -> None:
    producer = await manager.create(owner="probe")
    for _ in range(20_000):
        await producer.delta(stamp())
        await asyncio.sleep(0)
    await producer.complete()
    for _ in range(3):
        start, count = time.perf_counter(), 0
        async for _event in manager.subscribe(producer.job_id):
            count += 1
        took = (time.perf_counter() - start) * 1e3
        print(f"c: 20,000 chunks ({count} events) read in {took:.1f} ms")
    keys = getattr(manager, "keys", None)
    if keys is not None:
        used = 0
        for key in (keys.stream_job(producer.job_id), keys.stream_log(producer.job_id)):
            used += int(await client.memory_usage(key, samples=0) or 0)  # type: ignore[attr-defined]
        print(f"Redis memory of the finished job: {used / (20_000 * 16):.2f}x its text")


async def main(uri: str, name: str, coalesce: int) -> None:
    settings = load_settings(
        use_redis=True,
        redis_uri=uri,
        redis_key_prefix=f"probe{os.getpid()}",
        stream_delta_coalesce_ms=coalesce,
    )
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection)
    try:
        await manager.start()
        if name == "c":
            await resume(manager, connection.client)
        else:
            await workload(manager, connection.client, name)
    finally:
        await manager.close()
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2))
