"""The stream writer at the end of answers: answers that end together cost it one command."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import create_stream_manager
from tests.conftest import unique_prefix

pytestmark = pytest.mark.timeout(60)


async def test_answers_ending_together_leave_the_instance_set_in_one_command(
    standalone_factory: Any,
) -> None:
    # 500 answers of a load test ending within a few milliseconds cost one SREM each, each
    # through the client's pool: the event loop was busy with them while other answers
    # streamed (the tail at the end of workload b, docs/benchmarks.md).
    server = standalone_factory()  # a server of its own: its command counts are this test's
    settings = load_settings(
        use_redis=True, redis_uri=server.url(), redis_key_prefix=unique_prefix()
    )
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection)
    try:
        await manager.start()
        producers = [await manager.create(owner="u") for _ in range(40)]
        for producer in producers:
            await producer.delta("an answer")
        jobs_key = manager.keys.stream_instance_jobs(manager.instance_id)  # type: ignore[attr-defined]
        client: Any = connection.client
        assert await client.scard(jobs_key) == 40
        await client.config_resetstat()
        await asyncio.gather(*(producer.complete() for producer in producers))
        async with asyncio.timeout(5):
            while await client.scard(jobs_key):  # noqa: ASYNC110 - polls Redis
                await asyncio.sleep(0.02)
        stats = await client.info("commandstats")
        # One per flush that stored ends (the 40 ends take one or two).
        assert 1 <= stats["cmdstat_srem"]["calls"] <= 2
        assert all(producer.final_stored for producer in producers)
    finally:
        await manager.close()
        await connection.close()
