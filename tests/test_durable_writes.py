"""Writes whose loss a user would see wait for a replica (chatscale.redis.replication):
a new session (its loss is the loss of the way back to one's conversations; the fault
checker's Sentinel seed 2038 lost one written just before the master was paused) and a
conversation write (tests/server/test_stores.py)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable
from typing import Any

import pytest

from chatscale.redis import connect
from chatscale.server.idempotency import RedisIdempotencyStore
from chatscale.sessions.store import RedisSessionStore
from tests.conftest import redis_config, unique_prefix

pytestmark = [pytest.mark.sentinel, pytest.mark.timeout(60)]


async def held_back_by_a_paused_replica(deployment: Any, write: Awaitable[Any]) -> None:
    """Run ``write`` while the only replica is paused: it must still wait after 1 s, and
    complete within 4 s of the replica resuming."""
    replica_pid = deployment.replica.pid
    assert replica_pid is not None
    os.kill(replica_pid, signal.SIGSTOP)
    try:
        writing = asyncio.ensure_future(write)
        await asyncio.sleep(1.0)
        assert not writing.done(), "the write was taken as stored without a replica's copy"
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    async with asyncio.timeout(4):
        await writing


async def test_a_new_session_waits_for_a_replica(sentinel_factory: Any) -> None:
    deployment = sentinel_factory()
    conn = await connect(redis_config(deployment.sentinel_url(), prefix=unique_prefix()))
    conn.replication.saw(1)  # what the stream heartbeat reports for this master
    store = RedisSessionStore(conn)
    try:
        await held_back_by_a_paused_replica(deployment, store.save("h1", "state", 60))
        with deployment.replica.client() as replica:
            assert replica.get(conn.keys.session("h1")) == "state"
    finally:
        await conn.close()


async def test_without_replicas_a_session_is_one_write(standalone_conn: Any) -> None:
    store = RedisSessionStore(standalone_conn)
    async with asyncio.timeout(1):
        await store.save("h2", "state", 60)
    loaded = await store.load("h2")
    assert loaded is not None and loaded.state == "state"


async def test_a_request_ids_record_waits_for_a_replica(sentinel_factory: Any) -> None:
    # Lost with a master, the record of what a chat start began let the client's retry begin
    # the same answer again (fault checker, Sentinel seed 2038: 560 tokens for 480).
    deployment = sentinel_factory()
    conn = await connect(redis_config(deployment.sentinel_url(), prefix=unique_prefix()))
    conn.replication.saw(1)
    store = RedisIdempotencyStore(conn)
    started: dict[str, Any] = {"stream_id": "s1", "conversation_id": "c1"}
    try:
        assert await store.claim("u", "r1") is None
        await held_back_by_a_paused_replica(deployment, store.finish("u", "r1", started))
        with deployment.replica.client() as replica:
            assert replica.get(conn.keys.idempotency("u", "r1")) is not None
    finally:
        await conn.close()
