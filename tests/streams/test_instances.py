"""Several instances on one Redis: cross-instance reads and aborts, takeover, fencing,
drain, slow subscribers, memory per job."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chatscale.config import load_settings
from chatscale.redis import connect
from chatscale.streams import Event, JobInfo, JobStatus
from chatscale.streams.base import StreamManager
from chatscale.streams.redis import RedisStreamManager
from chatscale.streams.redis_liveness import Liveness
from tests.conftest import unique_prefix
from tests.streams.conftest import MakeManager
from tests.streams.helpers import check_ids, collect, text_of

ROOT = Path(__file__).resolve().parents[2]


async def slow_words(n: int = 100_000, delay: float = 0.005) -> AsyncIterator[str]:
    for i in range(n):
        yield f"w{i} "
        await asyncio.sleep(delay)


async def pause(manager: StreamManager) -> None:
    """The instance stalls (a long GC pause, a partition): it stops beating and its last
    heartbeat is made old at once, so the others' reapers see it dead."""
    assert isinstance(manager, RedisStreamManager)
    manager.liveness.beating = False
    await manager.client.zadd(manager.keys.stream_instances, {manager.instance_id: 1})


def deaf(manager: StreamManager) -> None:
    """The instance no longer hears the notices sent to its control channel (a lost
    message): it learns that its job moved only from its next refused write."""
    assert isinstance(manager, RedisStreamManager)

    async def ignore(_: bytes) -> None:
        return None

    manager.hub.handlers[manager.keys.stream_instance_control(manager.instance_id)] = ignore


def continuation(suffix: str, seen: list[JobInfo]) -> Any:
    async def proceed(info: JobInfo) -> AsyncIterator[str]:
        seen.append(info)
        for part in suffix.split("|"):
            yield part

    return proceed


def check_continued(
    events: list[Event], seen: list[JobInfo], suffix: str, head: list[Event] | None = None
) -> None:
    """``events``: a whole answer, ids in order, that starts with ``head`` and ended ``done``
    after the continuation (which saw the text before it) added ``suffix``."""
    if head is not None:
        assert events[: len(head)] == head
    check_ids(events)
    assert events[-1].type == "done", events[-1].data
    assert events[-1].data["text"] == seen[0].text + suffix
    assert text_of(events) == events[-1].data["text"]


async def test_job_is_read_and_aborted_from_another_instance(redis_streams: MakeManager) -> None:
    a = await redis_streams()
    b = await redis_streams()
    producer = await a.create(owner="u", meta={"conversation": "c"})
    task = a.run(producer, slow_words())
    first = await collect(b, producer.job_id, limit=3)
    assert [e.id for e in first] == ["1", "2", "3"]
    assert [j.job_id for j in await b.list_active("u")] == [producer.job_id]
    assert await b.abort(producer.job_id, owner="u", wait=5)
    await asyncio.wait_for(task, 5)
    assert producer.status is JobStatus.ABORTED
    on_b = await collect(b, producer.job_id)
    on_a = await collect(a, producer.job_id)
    assert on_a == on_b
    check_ids(on_b)
    assert on_b[:3] == first
    assert on_b[-1].type == "aborted"
    assert on_b[-1].data["text"] == text_of(on_b)
    info = await b.status(producer.job_id)
    assert info is not None and info.status is JobStatus.ABORTED
    assert await b.list_active("u") == []


async def test_subscriber_leaving_is_not_an_abort(redis_streams: MakeManager) -> None:
    a = await redis_streams()
    b = await redis_streams()
    producer = await a.create(owner="u")
    await producer.delta("hello ")
    await collect(b, producer.job_id, limit=1)
    await producer.delta("world")
    await producer.complete()
    events = await collect(b, producer.job_id)
    assert events[-1].type == "done"
    assert events[-1].data["text"] == "hello world"


async def test_slow_subscriber_rereads_from_the_log(standalone_streams: MakeManager) -> None:
    manager = await standalone_streams(stream_subscriber_buffer=2, stream_delta_coalesce_ms=0)
    producer = await manager.create(owner="u")
    stream = manager.subscribe(producer.job_id)
    got: list[Event] = []

    async def produce() -> None:
        for i in range(300):
            await producer.event("tool", {"i": i})
            if i % 3 == 0:
                await asyncio.sleep(0.001)
        await producer.complete()

    task = asyncio.create_task(produce())
    async with asyncio.timeout(20):
        async for event in stream:
            got.append(event)
            await asyncio.sleep(0.002)  # slower than the producer
    await task
    check_ids(got)
    assert [e.data["i"] for e in got[:-1]] == list(range(300))
    assert manager.metrics.subscriber_overflows >= 1


async def test_zombie_owner_is_fenced_off(standalone_streams: MakeManager) -> None:
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000)
    seen: list[JobInfo] = []
    b.set_continuation(continuation("[rest]", seen))
    producer = await a.create(owner="u")
    await producer.delta("before ")
    await asyncio.sleep(0.1)
    # ``a`` stalls (a long GC pause, a partition): it stops beating and looks dead.
    assert isinstance(a, RedisStreamManager)
    await pause(a)
    events = await collect(b, producer.job_id, within=10)
    assert events[-1].type == "done"
    assert events[-1].data["text"] == "before [rest]"
    assert seen[0].text == "before "
    # ``a`` wakes up and writes with its old epoch: refused, and told so.
    await producer.delta("zombie text")
    await producer.complete()
    assert producer.end_reason == "taken_over"
    assert producer.aborted.is_set()
    again = await collect(b, producer.job_id)
    assert again == events
    check_ids(again)
    assert b.metrics.takeovers == 1


@pytest.mark.parametrize("takeover", [False, True])
async def test_orphan_ends_with_an_error_within_the_lease(
    standalone_streams: MakeManager, takeover: bool
) -> None:
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000, stream_takeover=takeover)
    producer = await a.create(owner="u")
    await producer.delta("partial")
    await asyncio.sleep(0.05)
    await a.close()  # dies without handing anything over
    start = time.monotonic()
    events = await collect(b, producer.job_id, within=10)
    assert time.monotonic() - start < 3.0
    assert events[-1].type == "error"
    assert events[-1].data["code"] == "producer_lost"
    assert events[-1].data["text"] == "partial"


async def test_drain_hands_jobs_over_at_once(standalone_streams: MakeManager) -> None:
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000)
    seen: list[JobInfo] = []
    b.set_continuation(continuation("<continued>", seen))
    producer = await a.create(owner="u")
    task = a.run(producer, slow_words(delay=0.01))
    head = await collect(b, producer.job_id, limit=5)
    await a.drain(5)
    assert task.done()
    events = await collect(b, producer.job_id, within=10)
    check_continued(events, seen, "<continued>", head)


async def test_a_drain_hands_over_to_an_instance_that_starts_meanwhile(
    standalone_streams: MakeManager,
) -> None:
    # A redeploy that stops the last instance before its replacement is up: the answer
    # goes on, then over to the replacement (it ended in "the server shut down" before).
    a = await standalone_streams(stream_lease_ttl=1000)
    producer = await a.create(owner="u")
    task = a.run(producer, slow_words(delay=0.01))
    head = await collect(a, producer.job_id, limit=5)
    draining = asyncio.ensure_future(a.drain(5))
    await asyncio.sleep(0.6)
    assert not draining.done() and not task.done(), "went on while nobody could take over"
    seen: list[JobInfo] = []
    b = await standalone_streams(stream_lease_ttl=1000)
    b.set_continuation(continuation("<continued>", seen))
    async with asyncio.timeout(3):
        await draining
    assert task.done()
    events = await collect(b, producer.job_id, within=10)
    check_continued(events, seen, "<continued>", head)


async def test_an_instance_just_started_takes_a_hand_over_at_once(
    standalone_streams: MakeManager,
) -> None:
    # A redeploy: the replacement has just started when the old instance drains. A stale
    # heartbeat is claimed only after two leases of steady contact (it may be this
    # instance's own fault), but a hand-over (score 0) is no fault: it waited those two
    # leases too, and the answer stalled for them.
    a = await standalone_streams(stream_lease_ttl=3000)
    producer = await a.create(owner="u")
    task = a.run(producer, slow_words(delay=0.01))
    await collect(a, producer.job_id, limit=3)
    b = await standalone_streams(stream_lease_ttl=3000)
    assert isinstance(b, RedisStreamManager)
    started = time.monotonic()
    seen: list[JobInfo] = []
    b.set_continuation(continuation("<continued>", seen))
    await a.drain(5)
    assert task.done()
    events = await collect(b, producer.job_id, within=10)
    assert events[-1].type == "done" and seen
    # Before two leases of b's contact (6 s), which is when it could claim before.
    assert time.monotonic() - started < 4.5
    assert b.metrics.takeovers == 1


async def test_a_claim_under_way_when_a_drain_begins_is_handed_over(
    standalone_streams: MakeManager,
) -> None:
    # CI, test_rolling_restart_while_answers_stream: an instance began draining while its
    # reaper claimed a stopped instance's answer; the claim ended after the drain had
    # started, and the answer ended in a "producer_lost" error instead of going on.
    gone = await standalone_streams(stream_lease_ttl=1000)
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000)
    assert isinstance(gone, RedisStreamManager) and isinstance(a, RedisStreamManager)
    assert isinstance(b, RedisStreamManager)
    for manager in (a, b):
        manager.liveness.reaping = False  # the claims below are the test's
    seen_a: list[JobInfo] = []
    seen_b: list[JobInfo] = []

    async def slowly(info: JobInfo) -> AsyncIterator[str]:
        seen_a.append(info)
        async for word in slow_words(delay=0.01):
            yield word

    a.set_continuation(slowly)
    b.set_continuation(continuation("<b>", seen_b))
    producer = await gone.create(owner="u")
    await producer.delta("partial ")
    await gone.writer.flushed()
    await gone.close()  # leaves its job running, as a process that stopped would
    claim = asyncio.ensure_future(a.take_over(gone.instance_id, producer.job_id))
    await asyncio.sleep(0)  # the claim's first round trip is under way
    assert producer.job_id in a.liveness.claiming
    await a.drain(5)
    async with asyncio.timeout(5):
        assert await claim is not None
    # A drained instance claims nothing more.
    assert await a.take_over(gone.instance_id, producer.job_id) is None
    b.liveness.reaping = True
    events = await collect(b, producer.job_id, within=10)
    check_continued(events, seen_b, "<b>")
    assert seen_b[0].text.startswith("partial ")


async def test_takeover_after_kill_9_of_the_producer_process(
    redis_standalone: Any, standalone_streams: MakeManager
) -> None:
    b = await standalone_streams(stream_lease_ttl=1000)
    assert isinstance(b, RedisStreamManager)
    seen: list[JobInfo] = []
    b.set_continuation(continuation(" [taken over]| the end", seen))
    job_id = uuid.uuid4().hex
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.streams.producer_proc",
        redis_standalone.url(),
        b.keys.prefix,
        job_id,
        "1000",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"ready"
        reader = asyncio.create_task(collect(b, job_id, within=15))
        head = await collect(b, job_id, limit=10)
        os.kill(proc.pid, signal.SIGKILL)
        events = await reader
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 5)
    check_ids(events)
    assert events[:10] == head
    final = events[-1]
    assert final.type == "done"
    assert final.data["text"].endswith(" [taken over] the end")
    assert text_of(events) == final.data["text"]
    assert seen[0].text + " [taken over] the end" == final.data["text"]
    assert seen[0].text.startswith("w0 w1 w2 ")
    assert await collect(b, job_id) == events
    assert b.metrics.takeovers == 1


async def test_finished_job_costs_at_most_twice_its_text(standalone_streams: MakeManager) -> None:
    manager = await standalone_streams()
    assert isinstance(manager, RedisStreamManager)
    producer = await manager.create(owner="u")
    for i in range(2_000):
        await producer.delta(f"{i:013d}tok")
        if i % 50 == 0:
            await asyncio.sleep(0.001)
    await producer.complete()
    job = producer.job_id
    used = 0
    keys = manager.keys
    for key in (keys.stream_job(job), keys.stream_log(job)):
        used += int(await manager.client.memory_usage(key, samples=0) or 0)
    assert used <= 2 * 2_000 * 16, used


async def test_works_for_an_acl_user_confined_to_its_prefix(redis_acl: Any) -> None:
    from chatscale.config import load_settings
    from chatscale.redis import connect
    from chatscale.streams import create_stream_manager

    settings = load_settings(
        use_redis=True, redis_uri=redis_acl.acl_url(), redis_key_prefix=redis_acl.acl_prefix
    )
    assert settings.redis is not None
    connections = [await connect(settings.redis) for _ in range(2)]
    managers = [create_stream_manager(settings, c) for c in connections]
    try:
        for manager in managers:
            await manager.start()
        a, b = managers
        producer = await a.create(owner="u")
        task = a.run(producer, slow_words())
        await collect(b, producer.job_id, limit=2)
        assert await b.abort(producer.job_id, wait=5)
        await asyncio.wait_for(task, 5)
        events = await collect(b, producer.job_id)
        assert events[-1].type == "aborted"
    finally:
        for manager in managers:
            await manager.close()
        for connection in connections:
            await connection.close()


async def test_restart_under_the_same_instance_id_resumes_its_jobs(
    standalone_streams: MakeManager,
) -> None:
    first = await standalone_streams(instance_id="web-1", stream_lease_ttl=1000)
    producer = await first.create(owner="u")
    await producer.delta("abc")
    await asyncio.sleep(0.05)
    await first.close()  # killed: nothing handed over
    seen: list[JobInfo] = []
    second = await standalone_streams(instance_id="web-1", stream_lease_ttl=1000)
    second.set_continuation(continuation("def", seen))
    events = await collect(second, producer.job_id, within=10)
    assert events[-1].type == "done"
    assert events[-1].data["text"] == "abcdef"
    assert seen[0].text == "abc"
    check_ids(events)


async def test_an_exhausted_pool_delays_subscribers_never_fails_them(
    standalone_streams: MakeManager,
) -> None:
    # Four connections, a 200 ms pool wait: a burst of subscribers must wait and retry.
    writer = await standalone_streams()
    reader = await standalone_streams(redis_max_connections=4, redis_pool_timeout=200)
    assert isinstance(reader, RedisStreamManager)
    producer = await writer.create(owner="u")
    await producer.delta("hello ")
    pool: Any = reader.client.connection_pool
    held = []  # every connection the manager's own loops do not hold
    with contextlib.suppress(RedisConnectionError):
        while True:
            held.append(await pool.get_connection())
    assert held
    subscribers = [
        asyncio.create_task(collect(reader, producer.job_id, within=20)) for _ in range(20)
    ]
    await asyncio.sleep(0.6)  # three pool timeouts: the subscribers are retrying
    assert reader.metrics.read_retries > 0
    assert not any(task.done() for task in subscribers)
    for conn in held:
        await pool.release(conn)
    await producer.delta("world")
    await producer.complete()
    for events in await asyncio.gather(*subscribers):
        check_ids(events)
        assert events[-1].type == "done" and events[-1].data["text"] == "hello world"


async def test_a_burst_of_subscribers_shares_the_reads_connection(
    standalone_streams: MakeManager,
) -> None:
    # A redeploy's reconnections: 200 subscribers (20 on each of 10 jobs) arrive at once.
    # Their job and log reads share round trips on one held connection; each used to check
    # out (and first open) a pool connection of its own.
    writer = await standalone_streams()
    reader = await standalone_streams()
    assert isinstance(reader, RedisStreamManager)
    producers = [await writer.create(owner="u") for _ in range(10)]
    for producer in producers:
        await producer.delta("hello ")
    pool: Any = reader.client.connection_pool

    def opened() -> int:
        return len(pool._available_connections) + len(pool._in_use_connections)

    before = opened()
    subscribers = [
        asyncio.create_task(collect(reader, producer.job_id, within=20))
        for producer in producers
        for _ in range(20)
    ]
    async with asyncio.timeout(10):
        while reader.metrics.subscribers < len(subscribers):  # noqa: ASYNC110 - a counter
            await asyncio.sleep(0.01)
    for producer in producers:
        await producer.delta("world")
        await producer.complete()
    for events in await asyncio.gather(*subscribers):
        check_ids(events)
        assert events[-1].type == "done" and events[-1].data["text"] == "hello world"
    assert opened() - before <= 2  # the reads' line (and the hub's, if it was not open)


async def test_a_silent_job_is_reread_less_and_less_often(standalone_streams: MakeManager) -> None:
    # STREAM_LEASE_TTL 1 s and 500 ms blocking reads: the reader checks for silence about
    # every 500 ms. Without backing off, each of the 5 subscribers would re-read the job
    # about 12 times in 6 s; backing off, after 1, 3, 7 (and maybe 15) checks.
    manager = await standalone_streams(stream_lease_ttl=1_000, redis_socket_timeout=1_000)
    assert isinstance(manager, RedisStreamManager)
    producer = await manager.create(owner="u")
    await producer.delta("thinking... ")
    reads = 0
    original = manager.store.job

    async def counting(job_id: str) -> Any:
        nonlocal reads
        reads += 1
        return await original(job_id)

    manager.store.job = counting  # type: ignore[method-assign]
    subscribers = [
        asyncio.create_task(collect(manager, producer.job_id, within=20)) for _ in range(5)
    ]
    await asyncio.sleep(6)
    await producer.delta("done")
    await producer.complete()
    for events in await asyncio.gather(*subscribers):
        assert text_of(events) == "thinking... done"
    assert reads <= 5 + 5 * 4, reads


async def test_a_zombie_stores_and_publishes_nothing(standalone_streams: MakeManager) -> None:
    # ``a`` stalls and ``b`` takes the job over; ``a`` never hears of it (its control
    # notice is lost) and keeps producing text of its own. Nothing of it may reach a
    # subscriber or the log: every event after the claim is ``b``'s.
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000)
    c = await standalone_streams(stream_lease_ttl=1000)
    assert isinstance(a, RedisStreamManager)
    b.set_continuation(continuation("[b1] |[b2] |[b3]", []))
    # ``c`` (the watcher) is a live instance too and may win the claim: it continues alike
    # (without a continuation it ended the answer as it stood, and the test failed once).
    c.set_continuation(continuation("[b1] |[b2] |[b3]", []))
    producer = await a.create(owner="u")
    await producer.delta("before ")
    watcher = asyncio.create_task(collect(c, producer.job_id, within=15))
    await asyncio.sleep(0.1)
    deaf(a)
    await pause(a)
    async with asyncio.timeout(10):
        while (await a.client.hget(a.keys.stream_job(producer.job_id), "epoch")) != b"2":  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    for i in range(5):
        await producer.delta(f"[zombie{i}] ")
        await asyncio.sleep(0.01)
    await producer.complete()
    assert producer.end_reason == "taken_over"
    assert not producer.final_stored
    events = await watcher
    check_ids(events)
    assert "zombie" not in text_of(events)
    assert events[-1].data["text"] == "before [b1] [b2] [b3]"
    assert await collect(b, producer.job_id) == events


async def test_a_job_taken_back_by_its_stalled_owner_keeps_one_numbering(
    standalone_streams: MakeManager,
) -> None:
    # ``a`` stalls and ``b`` takes the job over; then ``b`` stalls and ``a`` takes it back
    # before its old producer has learnt that it was fenced. The old producer must stop at
    # once: its events numbered after ``b``'s claim must never be mixed into the new log.
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000)
    assert isinstance(a, RedisStreamManager) and isinstance(b, RedisStreamManager)

    def words_from(info: JobInfo) -> AsyncIterator[str]:
        return numbered_words(len(info.text.split()), 120)

    a.set_continuation(words_from)
    b.set_continuation(words_from)
    producer = await a.create(owner="u")
    first = a.run(producer, numbered_words(0, 120))
    await asyncio.sleep(0.2)
    deaf(a)  # ``a`` does not hear that its job moved, and writes nothing meanwhile
    flush = a.writer.flush
    a.writer.flush = _never  # type: ignore[method-assign]
    await pause(a)
    async with asyncio.timeout(10):
        while b.producer(producer.job_id) is None:  # noqa: ASYNC110 - polls another manager
            await asyncio.sleep(0.01)
    assert a.producer(producer.job_id) is producer  # ``a`` does not know yet
    await pause(b)
    a.liveness.beating = True
    taken = await a.take_over(b.instance_id, producer.job_id)
    a.writer.flush = flush  # type: ignore[method-assign]
    assert taken is not None and taken is not producer
    assert producer.closed and producer.end_reason == "taken_over"
    await asyncio.wait_for(first, 5)
    events = await collect(a, producer.job_id, within=20)
    check_ids(events)
    assert events[-1].type == "done"
    assert text_of(events) == events[-1].data["text"]
    assert text_of(events).split() == [f"w{i}" for i in range(120)]


async def numbered_words(start: int, end: int) -> AsyncIterator[str]:
    for i in range(start, end):
        yield f"w{i} "
        await asyncio.sleep(0.01)


async def test_resume_right_after_a_takeover_waits_for_the_new_owner(
    standalone_streams: MakeManager,
) -> None:
    # Between the claim (the job hash names the new owner) and the new owner storing what
    # it took over, a position the old owner delivered live is briefly beyond the log. It
    # must not be refused as "not in the log" (a browser's EventSource gives up on a 400).
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000)
    c = await standalone_streams(stream_lease_ttl=1000)
    assert isinstance(b, RedisStreamManager) and isinstance(c, RedisStreamManager)
    # Either living instance may claim the job (CI once saw ``c`` win the race): both can
    # continue it.
    b.set_continuation(continuation("[rest]", []))
    c.set_continuation(continuation("[rest]", []))
    producer = await a.create(owner="u")
    for i in range(10):
        await producer.delta(f"w{i} ")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    seen = await collect(c, producer.job_id, limit=10)
    last = seen[-1].id
    assert isinstance(a, RedisStreamManager)
    await pause(a)
    job_key = a.keys.stream_job(producer.job_id)
    owners = {b.instance_id.encode(), c.instance_id.encode()}
    async with asyncio.timeout(10):
        while (await a.client.hget(job_key, "inst")) not in owners:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    rest = await collect(c, producer.job_id, after=last, within=10)
    check_ids(seen + rest)
    assert rest[-1].type == "done"
    assert text_of(seen + rest) == rest[-1].data["text"]


async def test_a_paused_owner_stops_as_soon_as_it_hears_of_the_move(
    standalone_streams: MakeManager,
) -> None:
    # The new owner's notice on the old owner's control channel stops the old producer
    # (and its provider call) at once, even when the old owner writes nothing more.
    a = await standalone_streams(stream_lease_ttl=1000)
    b = await standalone_streams(stream_lease_ttl=1000)
    assert isinstance(a, RedisStreamManager)
    b.set_continuation(continuation("[rest]", []))
    producer = await a.create(owner="u")
    await producer.delta("before ")
    await asyncio.sleep(0.1)
    a.writer.flush = _never  # type: ignore[method-assign]
    await pause(a)
    async with asyncio.timeout(10):
        await producer.aborted.wait()
    assert producer.closed and producer.end_reason == "taken_over"
    assert a.producer(producer.job_id) is None
    events = await collect(b, producer.job_id)
    assert events[-1].data["text"] == "before [rest]"


async def _never(*_: Any) -> None:
    return None


async def test_a_beat_that_fails_fast_is_tried_again_within_its_period(
    standalone_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Cluster failovers in CI: redis-py failed a beat at once (connection refused, while it
    rediscovered the cluster through the dead master), and the instance stayed silent until
    its next beat a period later, a lease in all. An attempt that fails while its period
    lasts is tried again; here Redis is away from just before a beat is due to well before
    the period ends, and no beat fails."""
    server = standalone_factory()
    settings = load_settings(
        use_redis=True,
        redis_uri=server.url(),
        redis_key_prefix=unique_prefix(),
        redis_retry_max_attempts=1,  # the client itself does not try again
        redis_connect_timeout=500,
    )
    assert settings.redis is not None
    connection = await connect(settings.redis)

    async def claim(instance: str, job_id: str) -> None:
        raise AssertionError("nothing to claim")

    liveness = Liveness(
        connection.client,
        connection.keys,
        instance_id="i",
        lease_s=7.5,
        jobs_ttl_s=60,
        claim=claim,
        local_jobs=set,
    )
    liveness.reaping = False
    period = liveness.period_s  # 2.5 s: room for a restart on a loaded machine
    try:
        await liveness.beat()
        liveness.start()  # its first beat is due a period after this one
        due = liveness._last_beat_mono + period
        await asyncio.sleep(due - time.monotonic() - 0.2)
        with caplog.at_level("WARNING", logger="chatscale.streams.redis_liveness"):
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(0.5)  # the beat due meanwhile fails at once
            await asyncio.to_thread(server.start)
            assert time.monotonic() < due + period - 0.3, "the machine is too slow for this"
            await asyncio.sleep(due + period - time.monotonic())
        assert liveness.last_beat is not None
        assert time.monotonic() - liveness._last_beat_mono < period
        assert not [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
    finally:
        await liveness.close()
        await connection.close()
