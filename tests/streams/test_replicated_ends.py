"""A job's end survives a failover: with replicas, it is taken as stored, recorded and told
to subscribers only once a replica has it (:mod:`chatscale.redis.replication`).

Before, the end was published by append.lua as soon as the master stored it: after a
Sentinel failover a client had been told ``done`` by the former master while the new one
still showed the answer running (the fault checker's ``status_mismatch``)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import Event, create_stream_manager
from tests.conftest import unique_prefix

pytestmark = [pytest.mark.sentinel, pytest.mark.timeout(90)]


async def test_an_end_is_told_only_once_a_replica_has_it(sentinel_factory: Any) -> None:
    deployment = sentinel_factory()
    settings = load_settings(
        use_redis=True, redis_uri=deployment.sentinel_url(), redis_key_prefix=unique_prefix()
    )
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection)
    await manager.start()
    connection.replication.saw(1)  # what the heartbeat's INFO replication reports
    replica_pid = deployment.replica.pid
    assert replica_pid is not None
    events: list[Event] = []
    first = asyncio.Event()
    try:
        producer = await manager.create(owner="u")
        await producer.delta("hello ")

        async def follow() -> None:
            async for event in manager.subscribe(producer.job_id):
                events.append(event)
                first.set()

        follower = asyncio.ensure_future(follow())
        async with asyncio.timeout(5):
            await first.wait()
        os.kill(replica_pid, signal.SIGSTOP)
        try:
            ending = asyncio.ensure_future(producer.complete())
            await asyncio.sleep(1.0)
            assert not any(e.final for e in events), "told done before a replica had it"
            assert not producer.final_stored
        finally:
            os.kill(replica_pid, signal.SIGCONT)
        async with asyncio.timeout(10):
            await follower
            await ending
        assert events[-1].final and events[-1].type == "done"
        assert producer.final_stored
        with deployment.replica.client() as replica:
            stored = replica.hget(manager.keys.stream_job(producer.job_id), "status")
        assert stored == "complete"
    finally:
        await manager.close()
        await connection.close()
