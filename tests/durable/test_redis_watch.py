"""Live reads on Redis share one subscription per stream and process (the store's watch),
and a reader never sleeps through an append made between its read and its wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatscale.durable.model import AppendRequest, CreateRequest, Record
from chatscale.durable.offsets import START
from chatscale.durable.redis_store import RedisDurableStore
from chatscale.redis.connection import RedisConnection

PATH = "watched"


def _append(text: str) -> AppendRequest:
    return AppendRequest("text/plain", Record(text.encode(), 1), None, None, False)


@pytest.fixture
async def stores(standalone_conn: RedisConnection) -> AsyncIterator[tuple[RedisDurableStore, ...]]:
    # Two stores with their own pub/sub hubs: two instances of one deployment.
    here, there = RedisDurableStore(standalone_conn), RedisDurableStore(standalone_conn)
    request = CreateRequest("text/plain", None, None, None, False, b"", None)
    await here.create(PATH, request)
    yield here, there
    await here.close()
    await there.close()


async def _returns_within(seconds: float, waiting: asyncio.Future[Any]) -> None:
    t0 = time.monotonic()
    await asyncio.wait_for(waiting, 10)
    assert time.monotonic() - t0 < seconds


async def test_an_append_elsewhere_wakes_every_reader_through_one_subscription(
    stores: tuple[RedisDurableStore, RedisDurableStore],
) -> None:
    here, there = stores
    first = await here.read(PATH, START, 1 << 20)
    assert first.seen is None  # nobody listens yet
    keeper = asyncio.ensure_future(here.wait(PATH, first.end, 30, first.seen))
    await asyncio.sleep(0.5)  # subscribed (a first subscription may wake it once)
    read = await here.read(PATH, START, 1 << 20)
    assert read.seen is not None
    waits = [here.wait(PATH, first.end, 10, first.seen) for _ in range(25)]  # checked
    waits += [here.wait(PATH, read.end, 10, read.seen) for _ in range(25)]  # not checked
    waiting = [asyncio.ensure_future(w) for w in waits]
    await asyncio.sleep(0.3)
    assert not any(w.done() for w in waiting)
    assert len(here.hub.listeners[here._channel(PATH)]) == 1
    await there.append(PATH, _append("a"))
    await _returns_within(3, asyncio.gather(*waiting))
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)


async def test_an_append_between_read_and_wait_is_not_slept_through(
    stores: tuple[RedisDurableStore, RedisDurableStore],
) -> None:
    here, there = stores
    first = await here.read(PATH, START, 1 << 20)
    keeper = asyncio.ensure_future(here.wait(PATH, first.end, 30, first.seen))
    await asyncio.sleep(0.3)  # the watch is subscribed
    for i in range(5):
        read = await here.read(PATH, START, 1 << 20)
        assert read.seen is not None
        await there.append(PATH, _append(str(i)))
        await asyncio.sleep(0.2)  # its message reaches this process before the wait
        await _returns_within(3, asyncio.ensure_future(here.wait(PATH, read.end, 30, read.seen)))
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)
