"""A job's end survives a failover: with replicas, it is taken as stored, recorded and told
to subscribers only once a replica has it (:mod:`chatscale.redis.replication`), on Sentinel
(one WAIT after the pipelined appends) and on Cluster (a WAIT on the connection of the shard
that serves the job).

Before, the end was published by append.lua as soon as the master stored it: after a
Sentinel failover a client had been told ``done`` by the former master while the new one
still showed the answer running (the fault checker's ``status_mismatch``); on Cluster the
end was not waited for at all."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import Event, create_stream_manager
from chatscale.streams.redis import RedisStreamManager
from tests.conftest import unique_prefix
from tests.harness.servers import RedisServer

pytestmark = pytest.mark.timeout(120)


def _replica_of(replicas: list[RedisServer], port: int) -> RedisServer:
    for replica in replicas:
        with replica.client() as client:
            if int(client.info("replication")["master_port"]) == port:
                return replica
    raise AssertionError(f"no replica of :{port}")


@pytest.mark.parametrize(
    "topology",
    [
        pytest.param("sentinel", marks=pytest.mark.sentinel),
        pytest.param("cluster", marks=pytest.mark.cluster),
    ],
)
async def test_an_end_is_told_only_once_a_replica_has_it(
    topology: str, request: pytest.FixtureRequest
) -> None:
    if topology == "sentinel":
        deployment = request.getfixturevalue("sentinel_factory")()
        uri = deployment.sentinel_url()
    else:
        deployment = request.getfixturevalue("cluster_factory")(
            masters=3, replicas_per_master=1
        )
        uri = ",".join(deployment.urls())
    settings = load_settings(use_redis=True, redis_uri=uri, redis_key_prefix=unique_prefix())
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection)
    assert isinstance(manager, RedisStreamManager)
    await manager.start()
    connection.replication.saw(1)  # on Sentinel, what the heartbeat's INFO reports
    events: list[Event] = []
    first = asyncio.Event()
    try:
        producer = await manager.create(owner="u")
        await producer.delta("hello ")
        if topology == "sentinel":
            replica = deployment.replica
        else:
            node = manager.client.get_node_from_key(manager.keys.stream_job(producer.job_id))
            replica = _replica_of(deployment.replicas(), node.port)
        assert replica.pid is not None

        async def follow() -> None:
            async for event in manager.subscribe(producer.job_id):
                events.append(event)
                first.set()

        follower = asyncio.ensure_future(follow())
        async with asyncio.timeout(5):
            await first.wait()
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            ending = asyncio.ensure_future(producer.complete())
            await asyncio.sleep(1.0)
            assert not any(e.final for e in events), "told done before a replica had it"
            assert not producer.final_stored
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        # Told at once (not found later by a silent subscription's re-read of the log).
        async with asyncio.timeout(1.5):
            await follower
        async with asyncio.timeout(10):
            await ending
        assert events[-1].final and events[-1].type == "done"
        assert producer.final_stored
        with replica.client() as client:
            pipe = client.pipeline(transaction=False)
            if topology == "cluster":
                pipe.execute_command("READONLY")  # a Cluster replica serves reads only then
            pipe.hget(manager.keys.stream_job(producer.job_id), "status")
            stored = pipe.execute()[-1]
        assert stored == "complete"
    finally:
        await manager.close()
        await connection.close()
