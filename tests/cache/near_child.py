"""Helper process for the near-cache test: reads one key through its own near cache.

Usage: ``python near_child.py REDIS_URI PREFIX KEY``. Prints ``READY`` once subscribed,
then ``VALUE <json>`` each time the value it reads changes, and ``STATS <hits> <misses>``
when its stdin closes (or after 60 s). The near cache TTL is one hour, so only an
invalidation can make it see a new value.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

from chatscale.cache import CacheFactory, CacheKeys, NearCache
from chatscale.config import load_settings
from chatscale.redis import connect


def _watch_stdin(stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
    sys.stdin.read()
    loop.call_soon_threadsafe(stop.set)


async def main(uri: str, prefix: str, key: str) -> None:
    settings = load_settings(
        use_redis=True,
        redis_uri=uri,
        redis_key_prefix=prefix,
        near_cache_namespaces="ROLES",
        near_cache_ttl=3_600_000,
        forced_in_memory_cache_namespaces="",
    )
    assert settings.redis is not None
    connection = await connect(settings.redis)
    factory = CacheFactory(settings, connection)
    stop = asyncio.Event()
    threading.Thread(
        target=_watch_stdin, args=(stop, asyncio.get_running_loop()), daemon=True
    ).start()
    try:
        cache = factory.cache(CacheKeys.ROLES)
        assert isinstance(cache, NearCache)
        if not await cache.invalidator.wait_ready(10):
            print("NOT-READY", flush=True)
            return
        print("READY", flush=True)
        last: object = object()
        async with asyncio.timeout(60):
            while not stop.is_set():
                value = await cache.get(key, "<missing>")
                if value != last:
                    print("VALUE", json.dumps(value), flush=True)
                    last = value
                await asyncio.sleep(0.001)
        print("STATS", cache.hits, cache.misses, flush=True)
    finally:
        await factory.close()
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
