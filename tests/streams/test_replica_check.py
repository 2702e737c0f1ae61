"""What the stream store's replica check (``JobStore.replicated``: ``TIME`` then
``WAIT``) makes of Redis's answers: a count and a clock, "every replica" when the user may
not ask, and "none known" when the answer says nothing of the replicas."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from chatscale.redis.keys import KeySpace
from chatscale.streams.metrics import StreamMetrics
from chatscale.streams.redis_store import JobStore
from tests.conftest import unique_prefix


def _store(client: Any) -> JobStore:
    return JobStore(client, KeySpace(unique_prefix()), StreamMetrics(), timeout_s=5)


async def test_a_master_without_replicas_counts_none(redis_standalone: Any) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=redis_standalone.port)
    try:
        count, now = await _store(client).replicated(1, "k")
    finally:
        await client.aclose()
    assert count == 0 and now > 1_700_000_000


async def test_a_user_who_may_not_ask_counts_every_replica(redis_standalone: Any) -> None:
    user, secret = f"nowait-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with redis_standalone.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", user, "on", f">{secret}", "~*", "&*", "+@all", "-wait"
        )
    client = aioredis.Redis(
        host="127.0.0.1", port=redis_standalone.port, username=user, password=secret
    )
    try:
        assert await _store(client).replicated(2, "k") == (2, 0.0)
    finally:
        await client.aclose()
        with redis_standalone.client() as admin:
            admin.execute_command("ACL", "DELUSER", user)


@pytest.mark.sentinel
async def test_a_replica_asked_counts_none(redis_sentinel: Any) -> None:
    # A connection left on a demoted master asks a replica: "WAIT cannot be used with
    # replica instances", which once counted as every replica having the writes.
    replica = redis_sentinel.replica
    client = aioredis.Redis(host="127.0.0.1", port=replica.port, password=redis_sentinel.password)
    try:
        assert await _store(client).replicated(1, "k") == (0, 0.0)
    finally:
        await client.aclose()
