"""Regression tests of the defects found by running three instances under faults (issue
"Answers that survive faults end to end"). Each failed on the instance-log engine."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import JobStatus, Producer, StreamManager, codec, create_stream_manager
from chatscale.streams.redis import RedisStreamManager
from tests.conftest import unique_prefix
from tests.streams.conftest import MakeManager
from tests.streams.helpers import check_ids, collect, text_of
from tests.streams.test_instances import continuation, deaf, pause, slow_words


def recorder(into: list[tuple[str, str, str]]) -> Any:
    async def record(producer: Producer) -> None:
        into.append((producer.job_id, producer.status.value, producer.text))

    return record


async def keys_without_ttl(manager: StreamManager) -> list[str]:
    """Keys under the manager's prefix that never expire (the instances ZSET is the one
    documented singleton)."""
    assert isinstance(manager, RedisStreamManager)
    found = []
    async for key in manager.client.scan_iter(match=manager.keys.all_pattern):
        if await manager.client.ttl(key) == -1:
            found.append(key.decode())
    return [k for k in found if k != manager.keys.stream_instances]


async def test_only_the_producer_whose_end_is_stored_records_the_answer(
    standalone_streams: MakeManager,
) -> None:
    # Defect 1: ``a`` finished its answer locally while its job had moved to ``b``; ``a``
    # wrote its own text into the conversation and ``b``'s (the streamed one) was refused.
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000)
    assert isinstance(a, RedisStreamManager)
    recorded: list[tuple[str, str, str]] = []
    a.set_recorder(recorder(recorded))
    b.set_recorder(recorder(recorded))
    b.set_continuation(continuation("[by b]", []))
    producer = await a.create(owner="u")
    await producer.delta("start ")
    await asyncio.sleep(0.1)
    deaf(a)
    flush = a.writer.flush

    async def stalled() -> None:
        await asyncio.sleep(0.05)

    a.writer.flush = stalled  # type: ignore[method-assign]  # ``a`` cannot reach Redis
    await pause(a)
    events = await collect(b, producer.job_id, within=10)
    # ``a`` comes back, finishes its own answer and tries to store it.
    await producer.delta("[by a]")
    a.writer.flush = flush  # type: ignore[method-assign]
    await producer.complete()
    await asyncio.sleep(0.2)
    assert producer.end_reason == "taken_over" and not producer.final_stored
    assert recorded == [(producer.job_id, "complete", "start [by b]")]
    assert events[-1].data["text"] == "start [by b]"


async def test_an_end_its_instance_did_not_record_is_recorded_by_the_one_claiming_its_jobs(
    redis_streams: MakeManager,
) -> None:
    # ``a`` stored the answer's end and stopped before writing it into the conversation:
    # nobody recorded it, and the conversation never held the answer.
    a = await redis_streams(stream_lease_ttl=1000)
    b = await redis_streams(stream_lease_ttl=1000)
    recording = asyncio.Event()

    async def dies_while_recording(producer: Producer) -> None:
        recording.set()
        await asyncio.Event().wait()

    a.set_recorder(dies_while_recording)
    recorded: list[tuple[str, str, str]] = []
    b.set_recorder(recorder(recorded))
    producer = await a.create(owner="u")
    await producer.delta("all ")
    await producer.delta("of it")
    await producer.complete()
    await asyncio.wait_for(recording.wait(), 5)
    listed = await b.list_active("u")
    assert [(j.job_id, j.status) for j in listed] == [(producer.job_id, JobStatus.COMPLETE)]
    await pause(a)
    for _ in range(150):
        if recorded:
            break
        await asyncio.sleep(0.1)
    assert recorded == [(producer.job_id, "complete", "all of it")]
    assert await b.list_active("u") == []


async def _stop_redis_for(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.slow
async def test_a_redis_stall_longer_than_the_lease_moves_no_job(standalone_factory: Any) -> None:
    # Defect 2: after a Redis pause longer than the lease every heartbeat looked stale and
    # healthy instances took each other's jobs (46 takeovers of 50 jobs after 10 s).
    server = standalone_factory()
    managers: list[StreamManager] = []
    connections = []
    prefix = unique_prefix()
    try:
        for _ in range(3):
            settings = load_settings(
                use_redis=True,
                redis_uri=server.url(),
                redis_key_prefix=prefix,
                stream_lease_ttl=1000,
                redis_socket_timeout=1000,
            )
            assert settings.redis is not None
            connection = await connect(settings.redis)
            connections.append(connection)
            manager = create_stream_manager(settings, connection)
            await manager.start()
            manager.set_continuation(continuation("[taken over]", []))
            managers.append(manager)
        await asyncio.sleep(1.2)  # every instance has a lease of steady contact
        producers = [await m.create(owner="u") for m in managers for _ in range(4)]
        runs = [
            m.run(p, slow_words(400, 0.01)) for m in managers for p in producers if p._manager is m
        ]
        await asyncio.sleep(0.3)
        pid = server.pid
        assert pid is not None
        await _stop_redis_for(pid, 3.0)  # three leases
        await asyncio.wait_for(asyncio.gather(*runs), 30)
        for manager in managers:
            assert manager.metrics.takeovers == 0
        for producer in producers:
            assert producer.final_stored, producer
            events = await collect(managers[0], producer.job_id, within=10)
            check_ids(events)
            assert "taken over" not in events[-1].data["text"]
            assert text_of(events) == "".join(f"w{i} " for i in range(400))
    finally:
        for manager in managers:
            await manager.close()
        for connection in connections:
            await connection.close()


async def test_every_key_expires(standalone_streams: MakeManager) -> None:
    # Defect 3 (a user's job list without TTL when EXPIRE overtook ZADD) and defect 13 (an
    # abort addressed to a dead instance created its control stream without TTL; a dead
    # instance's job set never expired).
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000, stream_takeover=False)
    for i in range(30):
        producer = await a.create(owner=f"user{i}")
        await producer.delta("x")
        if i % 2:
            await producer.complete()
    await a.writer.flush() if isinstance(a, RedisStreamManager) else None
    await pause(a)
    running = await b.list_active("user0")
    assert running
    assert await b.abort(running[0].job_id, wait=5)
    assert await keys_without_ttl(b) == []


async def test_ttls_go_with_the_first_and_final_batch_and_a_periodic_refresh(
    standalone_streams: MakeManager,
) -> None:
    # Refreshing both TTLs at every window was two of append.lua's seven commands; they are
    # now sent with a job's first batch (which creates its log), its final one, and once per
    # ``ttl_refresh_s`` in between.
    manager = await standalone_streams(stream_running_ttl=600, stream_finished_ttl=300)
    assert isinstance(manager, RedisStreamManager)
    client, keys = manager.client, manager.keys
    producer = await manager.create(owner="u")
    job, log = keys.stream_job(producer.job_id), keys.stream_log(producer.job_id)

    async def ttls() -> list[int]:
        await manager.writer.flush()
        return [await client.ttl(job), await client.ttl(log)]

    await producer.delta("a")
    assert all(590 <= ttl <= 600 for ttl in await ttls())
    await client.expire(job, 100)
    await client.expire(log, 100)
    await producer.delta("b")
    assert all(90 <= ttl <= 100 for ttl in await ttls())  # not refreshed at every window
    manager.writer.ttl_refresh_s = 0
    await producer.delta("c")
    assert all(590 <= ttl <= 600 for ttl in await ttls())
    await producer.complete()
    assert all(290 <= ttl <= 300 for ttl in await ttls())
    assert text_of(await collect(manager, producer.job_id)) == "abc"


async def test_a_job_recreated_at_its_end_is_stored_as_ended(
    standalone_streams: MakeManager,
) -> None:
    # Defect 4: a job whose keys Redis lost was recreated from the batch prepared before
    # its final event and stayed ``running`` (status and TTL) with ``done`` in its log.
    manager = await standalone_streams()
    assert isinstance(manager, RedisStreamManager)
    producer = await manager.create(owner="u")
    for i in range(20):
        await producer.delta(f"w{i} ")
    await manager.writer.flush()
    keys = manager.keys
    await manager.client.delete(keys.stream_job(producer.job_id), keys.stream_log(producer.job_id))
    await producer.complete()
    info = await manager.status(producer.job_id)
    assert info is not None and info.status is JobStatus.COMPLETE
    assert info.text == "".join(f"w{i} " for i in range(20))
    ttl = await manager.client.ttl(keys.stream_job(producer.job_id))
    assert 0 < ttl <= manager.finished_ttl
    events = await collect(manager, producer.job_id)
    check_ids(events)
    assert events[-1].type == "done"


async def test_whoever_sees_the_final_event_finds_the_job_ended(
    standalone_streams: MakeManager,
) -> None:
    # Defect 5: the final event was published before the job's end was stored.
    a = await standalone_streams()
    b = await standalone_streams()
    for _ in range(20):
        producer = await a.create(owner="u")
        watcher = b.subscribe(producer.job_id)
        task = a.run(producer, slow_words(5, 0.001))
        async with asyncio.timeout(10):
            async for event in watcher:
                if event.final:
                    info = await b.status(producer.job_id)
                    assert info is not None and info.status is JobStatus.COMPLETE
        await task


@pytest.mark.slow
async def test_claiming_many_orphans_keeps_the_reaper_s_own_heartbeat(
    standalone_streams: MakeManager,
) -> None:
    # Defect 6: the reaper claimed dead jobs one by one on the heartbeat's own loop; with a
    # few hundred orphans its own heartbeat went stale and others took its jobs.
    a = await standalone_streams(stream_lease_ttl=1500)
    b = await standalone_streams(stream_lease_ttl=1500)
    c = await standalone_streams(stream_lease_ttl=1500)
    assert isinstance(b, RedisStreamManager) and isinstance(c, RedisStreamManager)
    b.set_continuation(continuation("[b]", []))
    c.set_continuation(continuation("[c]", []))
    producers = [await a.create(owner=f"u{i % 10}") for i in range(300)]
    for producer in producers:
        await producer.delta("x ")
    assert isinstance(a, RedisStreamManager)
    await a.writer.flush()
    await a.close()  # dies
    async with asyncio.timeout(30):
        while b.metrics.takeovers + c.metrics.takeovers < 300:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    # Neither took the other's jobs: each claimed job was continued by its claimer.
    for producer in producers:
        info = await b.status(producer.job_id)
        assert info is not None and info.status is JobStatus.COMPLETE
        assert info.text in ("x [b]", "x [c]")
    assert b.metrics.takeovers + c.metrics.takeovers == 300


async def test_close_ends_every_subscription(redis_streams: MakeManager) -> None:
    # Defect 7: close() of the Redis manager left its subscribers waiting forever.
    a = await redis_streams()
    b = await redis_streams()
    producer = await a.create(owner="u")
    await producer.delta("x")
    ended = asyncio.Event()

    async def follow() -> None:
        async for _ in b.subscribe(producer.job_id):
            pass
        ended.set()

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    await b.close()
    async with asyncio.timeout(3):
        await ended.wait()
    await task


async def test_a_create_that_fails_half_way_leaves_nothing(
    standalone_streams: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defect 8: a create() failing half way left a job that no instance owned or reaped.
    manager = await standalone_streams()
    assert isinstance(manager, RedisStreamManager)
    import chatscale.streams.redis as redis_module
    from chatscale.streams.scripts import LISTED as real

    async def failing(client: Any, keys: list[str], args: list[Any]) -> Any:
        if keys[0].endswith(":jobs") and "user:" in keys[0]:
            raise ConnectionError("lost the connection")
        return await real(client, keys, args)

    monkeypatch.setattr(redis_module, "LISTED", failing)
    with pytest.raises(ConnectionError):
        await manager.create(owner="u", job_id="half-made")
    keys = manager.keys
    assert not await manager.client.exists(keys.stream_job("half-made"))
    jobs_key = keys.stream_instance_jobs(manager.instance_id)
    assert not await manager.client.sismember(jobs_key, "half-made")


async def test_failed_writes_are_retried(standalone_factory: Any) -> None:
    # Defect 9: failed writes were logged and dropped. Redis goes away for a moment while
    # a job streams; every event reaches the log once it is back.
    server = standalone_factory()
    settings = load_settings(
        use_redis=True,
        redis_uri=server.url(),
        redis_key_prefix=unique_prefix(),
        redis_socket_timeout=500,
        redis_retry_max_delay=100,
    )
    assert settings.redis is not None
    connection = await connect(settings.redis)
    manager = create_stream_manager(settings, connection)
    try:
        await manager.start()
        producer = await manager.create(owner="u")
        words = [f"w{i} " for i in range(200)]
        for i, word in enumerate(words):
            await producer.delta(word)
            await asyncio.sleep(0.005)
            if i == 100:
                server.cli("CLIENT", "KILL", "TYPE", "normal", check=False)
                server.cli("CLIENT", "KILL", "TYPE", "pubsub", check=False)
        await producer.complete()
        assert producer.final_stored
        events = await collect(manager, producer.job_id)
        check_ids(events)
        assert text_of(events) == "".join(words)
    finally:
        await manager.close()
        await connection.close()


async def test_memory_per_running_job_is_its_text_once_on_the_write_side(
    standalone_streams: MakeManager,
) -> None:
    # Defect 14: each running job's log was held twice (events and text) with per-event
    # objects. The writer keeps encoded batches: about the text once.
    manager = await standalone_streams()
    assert isinstance(manager, RedisStreamManager)
    producer = await manager.create(owner="u")
    for i in range(2_000):
        await producer.delta(f"{i:013d}tok")
        if i % 100 == 0:
            await asyncio.sleep(0.003)
    await manager.writer.flush()
    job = manager.writer.jobs[producer.job_id]
    kept = sum(len(batch.items) for batch in job.batches)
    assert kept <= 2_000 * 16 * 1.2, kept


async def test_a_running_jobs_batches_cost_their_length_not_the_encoders_buffer(
    standalone_streams: MakeManager,
) -> None:
    # orjson hands back its output buffer (at least 4 KiB) whatever the JSON's length: a job
    # written a few events per window kept about 4 KiB per batch (bench b's peak RSS grew
    # with the messages it delivered). Measured as allocated, not as len().
    manager = await standalone_streams()
    assert isinstance(manager, RedisStreamManager)
    producer = await manager.create(owner="u")
    windows = 300
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(windows):
            await producer.delta(f"{i:013d}tok")
            await manager.writer.flush()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    job = manager.writer.jobs[producer.job_id]
    assert len(job.batches) >= windows * 0.9
    kept = sum(
        stat.size_diff
        for stat in after.compare_to(before, "filename")
        if stat.traceback[0].filename == codec.__file__
    )
    # A batch of one delta: its 20 bytes of JSON plus the bytes object's header.
    assert kept <= windows * 128, kept


async def test_abort_reaches_a_silent_owner_on_another_instance(
    redis_streams: MakeManager,
) -> None:
    # An owner that writes nothing (the model is thinking) still hears the abort at once.
    a = await redis_streams()
    b = await redis_streams()
    producer = await a.create(owner="u")

    async def thinking() -> AsyncIterator[str]:
        await asyncio.sleep(30)
        yield "never"

    task = a.run(producer, thinking())
    start = time.monotonic()
    assert await b.abort(producer.job_id, wait=5)
    assert time.monotonic() - start < 2
    await asyncio.wait_for(task, 5)
    events = await collect(b, producer.job_id)
    assert [e.type for e in events] == ["aborted"]


async def test_a_create_sent_again_after_a_lost_reply_is_the_same_create(
    standalone_streams: MakeManager,
) -> None:
    # redis-py sends a script again when its reply is lost (a connection reset or a black
    # hole between the instance and Redis): the first attempt had created the job, and the
    # retry's "already exists" became a 500 for POST /api/chat (checker standalone seed
    # 1064). The same create (same instance, creation time, epoch, nothing appended) is 1.
    from chatscale.streams.scripts import CREATE

    manager = await standalone_streams()
    assert isinstance(manager, RedisStreamManager)
    keys = [manager.keys.stream_job("j1"), manager.keys.stream_log("j1")]
    args = ["u", "{}", manager.instance_id, 1700000000.25, 60, 1, 1700000000.25]
    assert await CREATE(manager.client, keys, args) == 1
    assert await CREATE(manager.client, keys, args) == 1  # the retry of that create
    other = ["u", "{}", "another-instance", 1700000000.5, 60, 1, 1700000000.5]
    assert await CREATE(manager.client, keys, other) == 0  # a different create
