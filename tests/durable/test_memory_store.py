"""The memory store's own bookkeeping (its behaviour is the protocol's: the conformance
suite and tests/durable/test_http.py)."""

from __future__ import annotations

import asyncio
import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from chatscale.durable.memory import MemoryStore
from chatscale.durable.model import CreateRequest
from chatscale.durable.offsets import Offset


async def test_kept_appends_are_nothing_for_the_garbage_collector_to_walk() -> None:
    store = MemoryStore()
    request = CreateRequest("text/plain", None, None, None, False, b"", None)
    assert (await store.create("s", request)).status == 201
    for n in range(100):
        assert store.append_plain("s", "text/plain", b"x%d" % n) is not None
    gc.collect()
    stream = store._streams["s"]
    assert not any(gc.is_tracked(record) for record in stream.records)
    read = await store.read("s", Offset(0, 0), 1 << 20)
    assert [record.data for record in read.records] == [b"x%d" % n for n in range(100)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=50), min_size=0, max_size=30),
    st.integers(min_value=0, max_value=30),
    st.integers(min_value=1, max_value=200),
)
def test_a_read_takes_records_up_to_its_size_and_at_least_one(
    sizes: list[int], first: int, max_bytes: int
) -> None:
    async def check() -> None:
        store = MemoryStore()
        request = CreateRequest("text/plain", None, None, None, False, b"", None)
        await store.create("s", request)
        for n, size in enumerate(sizes):
            store.append_plain("s", "text/plain", bytes([65 + n % 26]) * size)
        start = min(first, len(sizes))
        ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
        offset = Offset(start, ends[start - 1] if start else 0)
        read = await store.read("s", offset, max_bytes)
        # The definition: from the start, while the bytes add up to at most max_bytes, and
        # at least one record when there is one.
        taken: list[int] = []
        for size in sizes[start:]:
            if taken and sum(taken) + size > max_bytes:
                break
            taken.append(size)
        assert [len(record.data) for record in read.records] == taken
        stop = start + len(taken)
        assert read.end == Offset(stop, ends[stop - 1] if stop else 0)

    asyncio.run(check())
