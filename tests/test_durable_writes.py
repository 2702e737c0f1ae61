"""Writes whose loss a user would see wait for a replica (chatscale.redis.replication):
a new session (its loss is the loss of the way back to one's conversations; the fault
checker's Sentinel seed 2038 lost one written just before the master was paused) and a
conversation write (tests/server/test_stores.py)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from chatscale.redis import connect
from chatscale.server.idempotency import RedisIdempotencyStore
from chatscale.sessions.store import RedisSessionStore
from tests.conftest import redis_config, unique_prefix

pytestmark = [pytest.mark.sentinel, pytest.mark.timeout(60)]


async def test_a_new_session_waits_for_a_replica(sentinel_factory: Any) -> None:
    deployment = sentinel_factory()
    conn = await connect(redis_config(deployment.sentinel_url(), prefix=unique_prefix()))
    conn.replication.saw(1)  # what the stream heartbeat reports for this master
    store = RedisSessionStore(conn)
    replica_pid = deployment.replica.pid
    assert replica_pid is not None
    try:
        os.kill(replica_pid, signal.SIGSTOP)
        try:
            saving = asyncio.ensure_future(store.save("h1", "state", 60))
            await asyncio.sleep(1.0)
            assert not saving.done(), "the session was taken as saved without a replica's copy"
        finally:
            os.kill(replica_pid, signal.SIGCONT)
        async with asyncio.timeout(4):
            await saving
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
    replica_pid = deployment.replica.pid
    assert replica_pid is not None
    started: dict[str, Any] = {"stream_id": "s1", "conversation_id": "c1"}
    try:
        assert await store.claim("u", "r1") is None
        os.kill(replica_pid, signal.SIGSTOP)
        try:
            finishing = asyncio.ensure_future(store.finish("u", "r1", started))
            await asyncio.sleep(1.0)
            assert not finishing.done(), "the record was taken as written without a replica"
        finally:
            os.kill(replica_pid, signal.SIGCONT)
        async with asyncio.timeout(4):
            await finishing
        with deployment.replica.client() as replica:
            assert replica.get(conn.keys.idempotency("u", "r1")) is not None
    finally:
        await conn.close()
