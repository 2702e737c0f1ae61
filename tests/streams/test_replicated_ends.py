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
import time
from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.redis import RedisConnection, connect
from chatscale.redis.replication import CONFIRM_S
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
        deployment = request.getfixturevalue("cluster_factory")(masters=3, replicas_per_master=1)
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
        late_events: list[Event] = []

        async def follow_late() -> None:
            async for event in manager.subscribe(producer.job_id):
                late_events.append(event)

        try:
            ending = asyncio.ensure_future(producer.complete())
            await asyncio.sleep(0.5)
            # A subscriber that reads the log now finds the end stored on the master only
            # (as a re-read of a subscription that was behind or lost messages would).
            late = asyncio.ensure_future(follow_late())
            await asyncio.sleep(1.0)
            assert not any(e.final for e in events), "told done before a replica had it"
            assert not any(e.final for e in late_events), "read done before a replica had it"
            assert not producer.final_stored
            # Nor does a status read tell it (the job's hash says finished already).
            info = await manager.status(producer.job_id)
            assert info is not None and info.status.value == "running"
            assert info.text == "hello " and info.last_event_id == "1"
            # And the owner's list of running answers still holds it.
            assert [j.job_id for j in await manager.list_active("u")] == [producer.job_id]
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        # Told at once (not found later by a silent subscription's re-read of the log, which
        # comes 5 s after its last message here, half a lease: 3.5 s from now at the
        # earliest). At once is the writer's next resend, up to a second away by its
        # back-off, then the WAIT and the publication: 0.4-0.6 s here, over 1.5 s once in CI.
        async with asyncio.timeout(2.5):
            await follower
        async with asyncio.timeout(5):
            await late
        assert late_events[-1].final and late_events[-1].data["text"] == "hello "
        async with asyncio.timeout(10):
            await ending
        assert events[-1].final and events[-1].type == "done"
        assert producer.final_stored
        info = await manager.status(producer.job_id)
        assert info is not None and info.status.value == "complete"
        assert info.last_event_id == "2"
        assert await manager.list_active("u") == []
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


async def _started_manager(uri: str) -> tuple[RedisConnection, RedisStreamManager]:
    """A connection to ``uri`` and a started stream manager on it (a fresh key prefix)."""
    settings = load_settings(use_redis=True, redis_uri=uri, redis_key_prefix=unique_prefix())
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection)
    assert isinstance(manager, RedisStreamManager)
    await manager.start()
    return connection, manager


async def _degraded_manager(make: Any) -> RedisStreamManager:
    """A manager whose master is known to have had a replica that has not answered a WAIT
    for CONFIRM_S (on a standalone server no replica ever answers): replication degraded,
    so an end is taken as stored after one unanswered WAIT."""
    manager = await make()
    assert isinstance(manager, RedisStreamManager)
    replication = manager.writer.replication
    replication.saw(1)
    replication.unconfirmed_since = time.monotonic() - CONFIRM_S
    assert replication.degraded
    return manager


async def _wait_for(check: Any, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 - polls Redis, which has no event to wait on
            await asyncio.sleep(0.05)


async def test_an_end_lost_after_a_degraded_write_is_written_again(
    standalone_streams: Any,
) -> None:
    """Checker seed 2022 (Sentinel, one replica, failovers back and forth): an end taken as
    stored while replication was degraded was told to the client, then lost in the next
    failover; the job stayed ``running`` at an earlier event for good. Now such an end stays
    under check by its producer, which writes the lost events and the end again."""
    manager = await _degraded_manager(standalone_streams)
    recorded: list[str] = []

    async def record(producer: Any) -> None:
        recorded.append(producer.job_id)

    manager.set_recorder(record)
    producer = await manager.create(owner="u")
    for word in ("one ", "two ", "three ", "four"):
        await producer.delta(word)
        await manager.writer.flushed()  # one event per word
    async with asyncio.timeout(5):
        await producer.complete()
    job_id = producer.job_id
    info = await manager.status(job_id)
    assert info is not None and info.status.value == "complete"
    last = int(info.last_event_id or 0)
    assert last == 5
    assert job_id in manager.writer.jobs, "an unconfirmed end must stay under check"

    # What a failover to a replica that had only the first two events leaves: the log
    # without its tail, the job running at event 2, listed under its instance again.
    client = manager.client
    keys = manager.keys
    log_key = keys.stream_log(job_id)
    kept = await client.xrange(log_key, "-", "0-2")
    await client.delete(log_key)  # (XDEL would leave the stream's last id at its end)
    for entry_id, fields in kept:
        await client.xadd(log_key, fields, id=entry_id)
    await client.hset(keys.stream_job(job_id), mapping={"seq": 2, "status": "running"})
    await client.sadd(keys.stream_instance_jobs(manager.instance_id), job_id)

    async def complete_again() -> bool:
        again = await manager.status(job_id)
        return again is not None and again.status.value == "complete" and len(recorded) == 2

    await _wait_for(complete_again, 5)
    again = await manager.status(job_id)
    assert again is not None and again.last_event_id == str(last)
    assert again.text == "one two three four"
    events = [e async for e in manager.subscribe(job_id, after="2")]
    assert [e.id for e in events] == [str(i) for i in range(3, last + 1)]
    assert events[-1].type == "done"
    assert manager.metrics.ends_repaired == 1
    assert manager.metrics.takeovers == 0
    # Recorded again (the conversation write may have been lost with the end).
    assert recorded == [job_id, job_id]


async def test_an_unconfirmed_end_is_checked_for_a_bounded_time(
    standalone_streams: Any,
) -> None:
    manager = await _degraded_manager(standalone_streams)
    manager.writer.verify_s = 1.0
    producer = await manager.create(owner="u")
    await producer.delta("text")
    async with asyncio.timeout(5):
        await producer.complete()
    assert producer.job_id in manager.writer.jobs
    assert not manager.writer.running(), "an end under check is no running job"

    async def dropped() -> bool:
        return producer.job_id not in manager.writer.jobs

    await _wait_for(dropped, 5)
    assert manager.metrics.ends_unverified == 1
    info = await manager.status(producer.job_id)
    assert info is not None and info.status.value == "complete"


@pytest.mark.sentinel
async def test_with_two_replicas_an_end_waits_for_both(sentinel_factory: Any) -> None:
    """One replica's copy is not enough with two: a failover may promote the other one
    (checker sentinel-ha seed 2020: writes a returning former master took, confirmed by its
    unpromotable replica alone, were lost, and every instance took its own jobs back)."""
    deployment = sentinel_factory(replicas=2)
    connection, manager = await _started_manager(deployment.sentinel_url())
    connection.replication.saw(2)  # what the heartbeat's INFO reports
    stopped = deployment.extra_replicas[0]
    assert stopped.pid is not None
    try:
        producer = await manager.create(owner="u")
        await producer.delta("hello")
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            ending = asyncio.ensure_future(producer.complete())
            await asyncio.sleep(1.0)
            assert not producer.final_stored, "taken as stored with one replica's copy of two"
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        async with asyncio.timeout(10):
            await ending
        assert producer.final_stored
        with stopped.client() as client:
            assert client.hget(manager.keys.stream_job(producer.job_id), "status") == "complete"
    finally:
        await manager.close()
        await connection.close()


@pytest.mark.sentinel
async def test_an_end_read_from_the_log_is_told_only_once_a_replica_has_it(
    sentinel_factory: Any,
) -> None:
    """Checker Sentinel seeds 2038, 2102: a former master back from a pause took an end
    (held from publication, but in the log); a client that resumed there read it in the
    log and was told ``done`` while the new master still had the answer running. A final
    event read from the log is now told only once the replicas have it."""
    deployment = sentinel_factory()
    connection, manager = await _started_manager(deployment.sentinel_url())
    connection.replication.saw(1)
    replica = deployment.replica
    assert replica.pid is not None
    events: list[Event] = []
    try:
        producer = await manager.create(owner="u")
        await producer.delta("hello")
        await manager.writer.flushed()
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            ending = asyncio.ensure_future(producer.complete())
            job = manager.store

            async def end_stored() -> bool:
                record = await job.job(producer.job_id)
                return record is not None and record.status.value == "complete"

            await _wait_for(end_stored, 3)  # in the log, not yet on the replica

            async def follow() -> None:
                async for event in manager.subscribe(producer.job_id):
                    events.append(event)

            follower = asyncio.ensure_future(follow())
            await asyncio.sleep(1.0)
            assert events and not any(e.final for e in events), "told done from the log"
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        async with asyncio.timeout(10):
            await follower
            await ending
        assert events[-1].final and events[-1].type == "done"
        assert [e.id for e in events] == [str(i) for i in range(1, len(events) + 1)]
    finally:
        await manager.close()
        await connection.close()


async def test_an_end_the_writer_told_without_a_replica_is_told_by_every_instance(
    standalone_streams: Any,
) -> None:
    """Checker Sentinel seed 12204: after a failover left the new master without a replica,
    the writer took its answers' ends as stored and told them (its clients saw ``done``),
    while another instance, judging by its own clock, answered ``running`` to a status read
    for up to CONFIRM_S more. The writer's telling is recorded in the job hash; every
    instance follows it."""
    writing = await _degraded_manager(standalone_streams)
    other = await standalone_streams()
    assert isinstance(other, RedisStreamManager)
    # Another instance that knows the master has a replica, which answers no WAIT (this
    # standalone server has none), and has not seen replication degraded itself.
    other.redis.replication.saw(1)
    assert other.redis.replication.waits and not other.redis.replication.degraded
    producer = await writing.create(owner="u")
    await producer.delta("text")
    async with asyncio.timeout(5):
        await producer.complete()
    assert producer.final_stored
    began = time.monotonic()
    info = await other.status(producer.job_id)
    assert info is not None and info.status.value == "complete" and info.last_event_id == "2"
    assert await other.list_active("u") == []
    events = [e async for e in other.subscribe(producer.job_id)]
    assert events[-1].final and events[-1].data["text"] == "text"
    assert time.monotonic() - began < CONFIRM_S / 2


async def test_instances_judge_an_unconfirmed_end_alike(standalone_streams: Any) -> None:
    """Checker Sentinel seed 12407 (failovers back and forth): an instance that had found
    replication degraded told an end read from the log at once, while the writer was still
    waiting for a replica and another instance answered ``running``. Whether an end is told
    no longer depends on an instance's own view of replication."""
    writing = await standalone_streams()
    assert isinstance(writing, RedisStreamManager)
    writing.redis.replication.saw(1)  # waits for a replica this server does not have
    degraded = await _degraded_manager(standalone_streams)
    producer = await writing.create(owner="u")
    await producer.delta("text")
    ending = asyncio.ensure_future(producer.complete())
    try:
        await asyncio.sleep(0.5)
        assert not producer.final_stored
        for reader in (degraded, writing):
            info = await reader.status(producer.job_id)
            assert info is not None and info.status.value == "running", reader
        # Once the writer takes it as stored (CONFIRM_S) and tells it, every instance does.
        async with asyncio.timeout(CONFIRM_S + 5):
            await ending
        for reader in (degraded, writing):
            info = await reader.status(producer.job_id)
            assert info is not None and info.status.value == "complete"
    finally:
        ending.cancel()
