"""The memory store's own bookkeeping (its behaviour is the protocol's: the conformance
suite and tests/durable/test_http.py)."""

from __future__ import annotations

import gc

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
