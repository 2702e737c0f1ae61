"""The stream API on every backend: delivery, resume from every position, bounds, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatscale.errors import UserFacingError
from chatscale.streams import (
    Event,
    InvalidEvent,
    InvalidEventId,
    JobExists,
    JobNotFound,
    JobStatus,
    Producer,
    StreamManager,
    TooManyListeners,
)
from chatscale.streams.runner import GENERIC_FAILURE
from tests.streams.conftest import MakeManager
from tests.streams.helpers import aclose, check_ids, collect, text_of


async def test_produce_then_replay_everything(streams: MakeManager) -> None:
    manager = await streams()
    producer = await manager.create(owner="alice", meta={"model": "demo"})
    for i in range(20):
        await producer.delta(f"t{i} ")
        if i % 7 == 0:
            await producer.event("tool", {"step": i})
            await asyncio.sleep(0.01)
    await producer.complete("stop")
    events = await collect(manager, producer.job_id)
    check_ids(events)
    expected = "".join(f"t{i} " for i in range(20))
    assert text_of(events) == expected
    assert events[-1].type == "done"
    assert events[-1].data == {"text": expected, "finish_reason": "stop"}
    assert [e.data["step"] for e in events if e.type == "tool"] == [0, 7, 14]
    info = await manager.status(producer.job_id)
    assert info is not None
    assert info.status is JobStatus.COMPLETE
    assert info.text == expected
    assert info.meta == {"model": "demo"}
    assert info.last_event_id == events[-1].id


async def test_resume_from_every_position_is_exact(streams: MakeManager) -> None:
    # Small replay pages: the archive is read over many pages.
    manager = await streams(stream_delta_coalesce_ms=0, stream_replay_page=4)
    producer = await manager.create(owner="u")
    for i in range(30):
        await producer.delta(f"{i},")
        await asyncio.sleep(0)
        if i % 10 == 9:
            await producer.event("status", {"i": i})
    await producer.complete()
    log = await collect(manager, producer.job_id)
    check_ids(log)
    assert len(log) >= 5
    for position in range(len(log)):
        after = str(position) if position else None
        assert await collect(manager, producer.job_id, after) == log[position:]


async def test_live_subscribers_and_reconnects_see_each_event_once(streams: MakeManager) -> None:
    manager = await streams(stream_delta_coalesce_ms=1)
    producer = await manager.create(owner="u")

    async def produce() -> None:
        for i in range(200):
            await producer.delta(f"<{i}>")
            if i % 20 == 0:
                await asyncio.sleep(0.002)
        await producer.complete()

    async def reconnecting_reader() -> list[Event]:
        got: list[Event] = []
        while not got or not got[-1].final:
            after = got[-1].id if got else None
            got.extend(await collect(manager, producer.job_id, after, limit=3))
        return got

    task = asyncio.create_task(produce())
    readers = await asyncio.gather(
        collect(manager, producer.job_id), collect(manager, producer.job_id), reconnecting_reader()
    )
    await task
    full = await collect(manager, producer.job_id)
    check_ids(full)
    assert text_of(full) == "".join(f"<{i}>" for i in range(200))
    for got in readers:
        assert got == full


@pytest.mark.parametrize("bad", ["abc", "-1", "01", "1.5", "1-0", " 2x", "9" * 30])
async def test_malformed_event_ids_are_refused(streams: MakeManager, bad: str) -> None:
    manager = await streams()
    producer = await manager.create(owner="u")
    await producer.delta("x")
    await producer.complete()
    with pytest.raises(InvalidEventId):
        await collect(manager, producer.job_id, bad)


async def test_event_id_beyond_the_log_is_refused(streams: MakeManager) -> None:
    manager = await streams()
    producer = await manager.create(owner="u")
    await producer.delta("x")
    await producer.complete()
    with pytest.raises(InvalidEventId, match="not in the log"):
        await collect(manager, producer.job_id, "3")
    running = await manager.create(owner="u")
    await running.delta("y")
    with pytest.raises(InvalidEventId):
        await collect(manager, running.job_id, "50")
    await running.complete()


async def test_unknown_job_and_wrong_owner_look_alike(streams: MakeManager) -> None:
    manager = await streams()
    producer = await manager.create(owner="alice")
    await producer.complete()
    with pytest.raises(JobNotFound):
        await collect(manager, "no-such-job")
    stream = manager.subscribe(producer.job_id, owner="mallory")
    with pytest.raises(JobNotFound):
        await stream.__anext__()
    await aclose(stream)
    assert await manager.status(producer.job_id, owner="mallory") is None
    assert await manager.status("no-such-job") is None
    with pytest.raises(JobNotFound):
        await manager.abort(producer.job_id, owner="mallory")
    with pytest.raises(JobNotFound):
        await manager.abort("no-such-job")


async def test_bad_producer_input_is_refused(streams: MakeManager) -> None:
    manager = await streams()
    producer = await manager.create(owner="u", job_id="fixed-id")
    with pytest.raises(JobExists):
        await manager.create(owner="u", job_id="fixed-id")
    with pytest.raises(InvalidEvent):
        await producer.event("done", {})
    with pytest.raises(InvalidEvent):
        await producer.event("tool", {"x": object()})
    with pytest.raises(InvalidEvent):
        await producer.event("tool", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent):
        await producer.delta(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent):
        await manager.create(owner="")
    with pytest.raises(InvalidEvent):
        await manager.create(owner="u", meta=["x"])  # type: ignore[arg-type]
    await producer.complete()


async def test_too_many_listeners(streams: MakeManager) -> None:
    manager = await streams(redis_max_listeners=2)
    producer = await manager.create(owner="u")
    await producer.delta("a")
    first = manager.subscribe(producer.job_id)
    second = manager.subscribe(producer.job_id)
    assert (await first.__anext__()).id == "1"
    assert (await second.__anext__()).id == "1"
    third = manager.subscribe(producer.job_id)
    with pytest.raises(TooManyListeners):
        await third.__anext__()
    await aclose(first)
    fourth = manager.subscribe(producer.job_id)
    assert (await fourth.__anext__()).id == "1"
    for stream in (second, third, fourth):
        await aclose(stream)
    await producer.complete()


async def test_log_event_cap_ends_the_job_with_an_error(streams: MakeManager) -> None:
    manager = await streams(stream_max_events=10, stream_delta_coalesce_ms=0)
    producer = await manager.create(owner="u")
    for i in range(30):
        await producer.event("tool", {"i": i})
    assert producer.closed
    assert producer.aborted.is_set()
    await producer.complete()  # ignored: the job already ended
    events = await collect(manager, producer.job_id)
    check_ids(events)
    assert len(events) == 10
    assert events[-1].type == "error"
    assert events[-1].data["code"] == "log_full"
    info = await manager.status(producer.job_id)
    assert info is not None and info.status is JobStatus.ERROR


async def test_log_byte_cap_keeps_the_text_below_it(streams: MakeManager) -> None:
    manager = await streams(stream_max_bytes=2048, stream_delta_coalesce_ms=0)
    producer = await manager.create(owner="u")
    for _ in range(100):
        await producer.delta("x" * 100)
        await asyncio.sleep(0)
    events = await collect(manager, producer.job_id)
    assert events[-1].type == "error"
    assert len(text_of(events)) <= 2048
    assert events[-1].data["text"] == text_of(events)


async def test_abort_stops_the_generation_and_keeps_the_partial_text(
    streams: MakeManager,
) -> None:
    manager = await streams()
    producer = await manager.create(owner="u")
    cancelled = asyncio.Event()

    async def provider() -> AsyncIterator[str]:
        try:
            for i in range(10_000):
                yield f"w{i} "
                await asyncio.sleep(0.001)
        finally:
            cancelled.set()

    task = manager.run(producer, provider())
    first = await collect(manager, producer.job_id, limit=2)
    assert await manager.abort(producer.job_id, owner="u")
    await asyncio.wait_for(task, 5)
    assert cancelled.is_set()
    events = await collect(manager, producer.job_id)
    assert events[: len(first)] == first
    assert events[-1].type == "aborted"
    assert events[-1].data["text"] == text_of(events)
    assert text_of(events).startswith("w0 w1 ")
    assert not await manager.abort(producer.job_id)  # already finished
    assert (await manager.status(producer.job_id)).status is JobStatus.ABORTED  # type: ignore[union-attr]
    assert manager.metrics.aborts >= 1


async def test_run_completes_and_fails(streams: MakeManager) -> None:
    manager = await streams()

    async def ok() -> AsyncIterator[str]:
        yield "a"
        yield "b"

    async def broken() -> AsyncIterator[str]:
        yield "a"
        raise RuntimeError("driver said redis://u:pw@h")

    async def refused() -> AsyncIterator[str]:
        yield "a"
        raise UserFacingError("the model server answered 429")

    good = await manager.create(owner="u")
    bad = await manager.create(owner="u")
    told = await manager.create(owner="u")
    assert await manager.run(good, ok()) is JobStatus.COMPLETE
    assert await manager.run(bad, broken()) is JobStatus.ERROR
    assert await manager.run(told, refused()) is JobStatus.ERROR
    good_events = await collect(manager, good.job_id)
    assert good_events[-1].data == {"text": "ab", "finish_reason": "stop"}
    # Only errors written for end users reach them; any other is logged, and they read a
    # generic message (a driver's message can name hosts and credentials).
    bad_events = await collect(manager, bad.job_id)
    assert bad_events[-1].data == {"text": "a", "message": GENERIC_FAILURE}
    told_events = await collect(manager, told.job_id)
    assert told_events[-1].data == {"text": "a", "message": "the model server answered 429"}


async def test_list_active_and_status(streams: MakeManager) -> None:
    manager = await streams()
    first = await manager.create(owner="bob", meta={"conversation": "c1"})
    second = await manager.create(owner="bob")
    other = await manager.create(owner="carol")
    await second.delta("hello")
    await second.complete()
    active = await manager.list_active("bob")
    assert [j.job_id for j in active] == [first.job_id]
    assert active[0].meta == {"conversation": "c1"}
    assert active[0].status is JobStatus.RUNNING
    assert await manager.list_active("nobody") == []
    await first.delta("so far")
    await asyncio.sleep(0.05)
    info = await manager.status(first.job_id, owner="bob")
    assert info is not None and info.text == "so far" and info.status is JobStatus.RUNNING
    await first.complete()
    await other.complete()
    assert await manager.list_active("bob") == []


async def test_list_active_lists_running_jobs_oldest_first(streams: MakeManager) -> None:
    manager = await streams()
    older = await manager.create(owner="dave")
    await asyncio.sleep(0.01)
    newer = await manager.create(owner="dave")
    active = await manager.list_active("dave")
    assert [j.job_id for j in active] == [older.job_id, newer.job_id]
    await older.complete()
    await asyncio.sleep(0.05)
    assert [j.job_id for j in await manager.list_active("dave")] == [newer.job_id]
    await newer.complete()
    await asyncio.sleep(0.05)
    assert await manager.list_active("dave") == []


async def _listed(manager: StreamManager, owner: str) -> list[tuple[str, JobStatus]]:
    return [(j.job_id, j.status) for j in await manager.list_active(owner)]


async def test_an_ended_job_is_listed_until_it_is_recorded(streams: MakeManager) -> None:
    # A tab that listed the running answers, then read the recorded ones, found an answer
    # that had just ended in neither; a regeneration in that moment kept both answers.
    manager = await streams()
    release = asyncio.Event()
    recorded: list[str] = []

    async def record(producer: Producer) -> None:
        await release.wait()
        recorded.append(producer.job_id)

    manager.set_recorder(record)
    producer = await manager.create(owner="erin")
    await producer.delta("hello")
    await producer.complete()
    ended = [(producer.job_id, JobStatus.COMPLETE)]
    for _ in range(100):  # on Sentinel the end is listed as running until a replica has it
        if await _listed(manager, "erin") == ended:
            break
        await asyncio.sleep(0.05)
    assert await _listed(manager, "erin") == ended
    await asyncio.sleep(0.3)
    assert await _listed(manager, "erin") == ended and recorded == []  # still recording
    release.set()
    for _ in range(100):
        if not await _listed(manager, "erin"):
            break
        await asyncio.sleep(0.02)
    assert recorded == [producer.job_id]
    assert await manager.list_active("erin") == []


async def test_finished_jobs_expire_after_the_grace_window(streams: MakeManager) -> None:
    manager = await streams(stream_finished_ttl=1)
    producer = await manager.create(owner="u")
    await producer.delta("bye")
    await producer.complete()
    assert await manager.status(producer.job_id) is not None
    await asyncio.sleep(1.3)
    assert await manager.status(producer.job_id) is None
    with pytest.raises(JobNotFound):
        await collect(manager, producer.job_id)


async def test_drain_ends_unfinished_jobs(streams: MakeManager) -> None:
    manager = await streams(stream_takeover=False)
    producer = await manager.create(owner="u")
    await producer.delta("partial")
    done = await manager.create(owner="u")
    await done.complete()
    await manager.drain(0.1)
    events = await collect(manager, producer.job_id)
    assert events[-1].type == "error"
    assert events[-1].data["text"] == "partial"
    assert producer.aborted.is_set()


async def test_a_stalled_producer_ends_with_an_error(streams: MakeManager) -> None:
    manager = await streams()
    manager.stall_s = 0.4  # STREAM_RUNNING_TTL is at least 10 s; shortened to keep this fast
    producer = await manager.create(owner="u")
    await producer.delta("started")
    events = await collect(manager, producer.job_id, within=5)
    assert events[-1].type == "error"
    assert events[-1].data["text"] == "started"
    assert "STREAM_RUNNING_TTL" in events[-1].data["message"]
    assert producer.aborted.is_set()


async def test_a_subscriber_going_away_does_not_disturb_the_others(streams: MakeManager) -> None:
    manager = await streams()
    producer = await manager.create(owner="u")
    await producer.delta("a")
    staying = asyncio.create_task(collect(manager, producer.job_id))
    leaving = asyncio.create_task(collect(manager, producer.job_id))
    await asyncio.sleep(0.1)
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    await producer.delta("b")
    await producer.complete()
    events = await staying
    assert events[-1].data["text"] == "ab"
    # resuming after the final event ends at once
    assert await collect(manager, producer.job_id, events[-1].id, within=2) == []
