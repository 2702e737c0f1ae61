"""A producer instance in its own process, for kill -9 tests.

Usage: python -m tests.streams.producer_proc <redis uri> <prefix> <job id> <lease ms>
Creates the job, prints ``ready <n>`` once some text is stored, and produces ``w<i> ``
every 10 ms until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import create_stream_manager


async def main(uri: str, prefix: str, job_id: str, lease_ms: int) -> None:
    settings = load_settings(
        use_redis=True, redis_uri=uri, redis_key_prefix=prefix, stream_lease_ttl=lease_ms
    )
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection, instance_id="victim")
    await manager.start()
    producer = await manager.create(owner="u", meta={"model": "demo"}, job_id=job_id)
    i = 0
    while True:
        await producer.delta(f"w{i} ")
        i += 1
        if i == 30:
            print("ready", flush=True)
        await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
