"""Event sinks (``subscribe(..., sink=...)``): once caught up, a subscriber's live events
are handed to its sink as they are stored (in memory) instead of being yielded; whatever
the sink declines is yielded. On every backend, sink plus iterator see every event once,
in order."""

from __future__ import annotations

import asyncio

from chatscale.config import load_settings
from chatscale.streams import Event, StreamManager, create_stream_manager
from tests.streams.conftest import MakeManager
from tests.streams.helpers import check_ids, text_of


class Sink:
    """Takes events, or declines those whose id is in ``decline`` (once each)."""

    def __init__(self, decline: set[str] | None = None) -> None:
        self.taken: list[Event] = []
        self.decline = set(decline or ())

    def __call__(self, event: Event) -> bool:
        if event.id in self.decline:
            self.decline.discard(event.id)
            return False
        self.taken.append(event)
        return True


async def follow(manager: StreamManager, job_id: str, sink: Sink) -> list[Event]:
    """Every event, through the sink or the iterator, in the order they arrived."""
    seen: list[Event] = []
    iterator = manager.subscribe(job_id, owner="alice", sink=sink)
    async for event in iterator:
        # What the sink took since the last yield came before this event.
        seen.extend(e for e in sink.taken if e not in seen)
        seen.append(event)
    seen.extend(e for e in sink.taken if e not in seen)
    return seen


async def produce(manager: StreamManager, count: int) -> str:
    producer = await manager.create(owner="alice")
    job_id = producer.job_id

    async def run() -> None:
        await asyncio.sleep(0.05)  # the subscriber is caught up (at the start) by then
        for i in range(count):
            await producer.delta(f"t{i} ")
            await asyncio.sleep(0.002)
        await producer.complete("stop")

    asyncio.get_running_loop().create_task(run())
    return job_id


async def test_sink_and_iterator_see_every_event_once_in_order(streams: MakeManager) -> None:
    manager = await streams()
    job_id = await produce(manager, 30)
    sink = Sink(decline={"5", "6", "20"})
    events = await asyncio.wait_for(follow(manager, job_id, sink), 10)
    check_ids(events)
    assert text_of(events) == "".join(f"t{i} " for i in range(30))
    assert events[-1].type == "done"


async def test_memory_hands_live_events_to_the_sink() -> None:
    """In memory the sink takes the live events (the final one too) and the iterator
    yields only what it declined."""
    manager = create_stream_manager(load_settings(), None)
    await manager.start()
    try:
        job_id = await produce(manager, 30)
        sink = Sink(decline={"7"})

        async def read() -> list[str]:
            return [e.id async for e in manager.subscribe(job_id, owner="alice", sink=sink)]

        yielded = await asyncio.wait_for(read(), 10)
        taken = [e.id for e in sink.taken]
        assert "7" in yielded and "7" not in taken
        assert sorted(taken + yielded, key=int) == [str(i) for i in range(1, 32)]
        # Live events go to the sink (a declined event is yielded, and the subscriber is
        # caught up again long before the next 2 ms later); the final one is yielded, after
        # the answer's recording has started.
        assert len(taken) >= 25, yielded
        assert yielded[-1] == "31" and not any(e.final for e in sink.taken)
        assert manager.metrics.events_delivered == 31
    finally:
        await manager.close()


async def test_closing_the_manager_ends_a_following_subscriber() -> None:
    manager = create_stream_manager(load_settings(), None)
    await manager.start()
    producer = await manager.create(owner="alice")
    await producer.delta("a ")
    sink = Sink()
    iterator = manager.subscribe(producer.job_id, owner="alice", sink=sink)

    async def drain() -> list[str]:
        return [e.id async for e in iterator]

    reading = asyncio.create_task(drain())
    await asyncio.sleep(0.05)
    await manager.close()
    assert await asyncio.wait_for(reading, 5) == ["1"]
