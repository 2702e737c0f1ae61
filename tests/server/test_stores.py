"""Conversation store, idempotent starts and the session event feed on every backend."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from chatscale.redis import RedisConnection, connect
from chatscale.server.chat import store_answer_retrying
from chatscale.server.events import SessionEvents
from chatscale.server.idempotency import (
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    StillStarting,
)
from chatscale.server.store import (
    MemoryConversationStore,
    RedisConversationStore,
    title_of,
)
from tests.conftest import redis_config, unique_prefix


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("standalone", id="standalone"),
        pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
        pytest.param("sentinel", id="sentinel", marks=pytest.mark.sentinel),
    ]
)
def backend(request: pytest.FixtureRequest) -> RedisConnection | None:
    """No Redis (memory backends), then each topology."""
    if request.param == "memory":
        return None
    connection: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
    return connection


def _store(connection: RedisConnection | None) -> Any:
    if connection is None:
        return MemoryConversationStore(3600)
    return RedisConversationStore(connection, 3600)


async def test_conversations_per_user_and_answers_stored_once(
    backend: RedisConnection | None,
) -> None:
    store = _store(backend)
    await store.add_user_message(
        "u1", "c1", {"role": "user", "content": "hi", "created_at": 1.0}, title="hi"
    )
    answer = {"role": "assistant", "content": "hello", "created_at": 2.0, "stream_id": "s1"}
    assert await store.store_answer("u1", "c1", "s1", answer) is True
    assert await store.store_answer("u1", "c1", "s1", answer) is False  # once per stream
    await store.add_user_message(
        "u1", "c2", {"role": "user", "content": "x", "created_at": 3.0}, title="x"
    )
    found = await store.get("u1", "c1")
    assert [m["content"] for m in found["messages"]] == ["hi", "hello"]
    assert found["title"] == "hi"
    assert [c["id"] for c in await store.list("u1")] == ["c2", "c1"]
    assert await store.list("u2") == []
    assert await store.get("u2", "c1") is None
    # A user id full of key-breaking characters stays in its own keys.
    await store.add_user_message(
        "a:{b}*", "c1", {"role": "user", "content": "z", "created_at": 1.0}, title="z"
    )
    assert [m["content"] for m in (await store.get("a:{b}*", "c1"))["messages"]] == ["z"]
    assert [m["content"] for m in (await store.get("u1", "c1"))["messages"]] == ["hi", "hello"]


async def test_answers_to_an_unknown_conversation_are_not_stored(
    backend: RedisConnection | None,
) -> None:
    store = _store(backend)
    if backend is None:
        assert await store.store_answer("u", "nope", "s", {"role": "assistant"}) is False


async def test_a_user_message_is_stored_once_per_request_id(
    backend: RedisConnection | None,
) -> None:
    store = _store(backend)
    message = {"role": "user", "content": "hi", "created_at": 1.0}
    assert await store.add_user_message("u1", "c1", message, title="hi", request_id="r1")
    assert not await store.add_user_message("u1", "c1", message, title="hi", request_id="r1")
    assert await store.add_user_message("u1", "c1", message, title="hi", request_id="r2")
    assert not await store.add_user_message("u1", "c1", message, title="hi", request_id="r2")
    assert await store.add_user_message("u1", "c1", message, title="hi")  # no id: always
    assert await store.add_user_message("u2", "c1", message, title="hi", request_id="r1")
    found = await store.get("u1", "c1")
    assert [m["content"] for m in found["messages"]] == ["hi", "hi", "hi"]


async def test_rename_and_delete(backend: RedisConnection | None) -> None:
    store = _store(backend)
    message = {"role": "user", "content": "hi", "created_at": 1.0}
    await store.add_user_message("u1", "c1", message, title="hi")
    await store.add_user_message("u1", "c2", message, title="hi")
    assert await store.rename("u1", "c1", "Renamed") is True
    assert (await store.get("u1", "c1"))["title"] == "Renamed"
    # Renaming keeps the order (most recently updated first) and touches no other user.
    assert [(c["id"], c["title"]) for c in await store.list("u1")] == [
        ("c2", "hi"),
        ("c1", "Renamed"),
    ]
    assert await store.rename("u2", "c1", "theirs") is False
    assert await store.rename("u1", "nope", "x") is False
    assert await store.get("u1", "nope") is None  # a rename creates nothing
    assert await store.delete("u2", "c1") is False
    assert await store.delete("u1", "c1") is True
    assert await store.delete("u1", "c1") is False
    assert await store.get("u1", "c1") is None
    assert [c["id"] for c in await store.list("u1")] == ["c2"]
    assert await store.rename("u1", "c1", "gone") is False


async def test_an_answer_ending_after_its_conversation_was_deleted_is_dropped(
    backend: RedisConnection | None,
) -> None:
    store = _store(backend)
    message = {"role": "user", "content": "hi", "created_at": 1.0}
    await store.add_user_message("u1", "c1", message, title="hi")
    assert await store.delete("u1", "c1") is True
    answer = {"role": "assistant", "content": "late", "created_at": 2.0, "stream_id": "s1"}
    assert await store.store_answer("u1", "c1", "s1", answer) is False
    assert await store.get("u1", "c1") is None
    assert await store.list("u1") == []
    # A new message in that conversation (another tab still showing it) starts it again.
    await store.add_user_message("u1", "c1", {**message, "content": "again"}, title="again")
    assert await store.store_answer("u1", "c1", "s2", {**answer, "stream_id": "s2"}) is True
    found = await store.get("u1", "c1")
    assert [m["content"] for m in found["messages"]] == ["again", "late"]
    assert found["title"] == "again"


def test_titles_are_one_short_line() -> None:
    assert title_of("  hello\n  world ") == "hello world"
    assert len(title_of("x" * 500)) == 80


async def test_idempotent_claims(backend: RedisConnection | None) -> None:
    store = (
        MemoryIdempotencyStore(wait_s=0.3)
        if backend is None
        else RedisIdempotencyStore(backend, wait_s=0.3)
    )
    assert await store.claim("u", "r1") is None
    with pytest.raises(StillStarting):
        await store.claim("u", "r1")  # the first is still starting (waits, then gives up)
    await store.finish("u", "r1", {"stream_id": "s", "conversation_id": "c"})
    assert await store.claim("u", "r1") == {"stream_id": "s", "conversation_id": "c"}
    assert await store.claim("other", "r1") is None  # per user
    await store.release("other", "r1")
    assert await store.claim("other", "r1") is None


async def test_racing_duplicates_get_the_first_start(backend: RedisConnection | None) -> None:
    store = MemoryIdempotencyStore() if backend is None else RedisIdempotencyStore(backend)
    assert await store.claim("u", "race") is None

    async def finish_soon() -> None:
        await asyncio.sleep(0.2)
        await store.finish("u", "race", {"stream_id": "s1", "conversation_id": "c1"})

    finisher = asyncio.create_task(finish_soon())
    assert await store.claim("u", "race") == {"stream_id": "s1", "conversation_id": "c1"}
    await finisher


async def test_session_events_reach_every_instance(backend: RedisConnection | None) -> None:
    if backend is None:
        one = two = SessionEvents("a")
    else:
        # Two instances (own subscriptions, own ids) on one shared Redis.
        one, two = SessionEvents("a", backend), SessionEvents("b", backend)
    await one.start()
    if two is not one:
        await two.start()
    try:
        got: list[Any] = []
        stranger: list[Any] = []

        async def listen(events: SessionEvents, user: str, into: list[Any]) -> None:
            async for item in events.listen(user):
                into.append(item)
                if item["kind"] == "ended":
                    return

        listener = asyncio.create_task(listen(two, "u1", got))
        other_user = asyncio.create_task(listen(two, "u2", stranger))
        await asyncio.sleep(0.1)
        await one.publish("u1", "started", {"stream_id": "s"})
        await one.publish("u1", "ended", {"stream_id": "s"})
        await asyncio.wait_for(listener, 5)
        assert [g["kind"] for g in got] == ["started", "ended"]
        assert stranger == []
        other_user.cancel()
        await asyncio.gather(other_user, return_exceptions=True)
    finally:
        await one.close()
        if two is not one:
            await two.close()


@pytest.mark.sentinel
@pytest.mark.timeout(60)
async def test_a_recorded_answer_waits_for_a_replica(sentinel_factory: Any) -> None:
    # An answer acknowledged by a master that then loses its role (a failover) is gone
    # unless a replica has it: with replicas, the write is sent again until one does.
    deployment = sentinel_factory()
    conn = await connect(redis_config(deployment.sentinel_url(), prefix=unique_prefix()))
    conn.replication.saw(1)  # what the stream heartbeat reports for this master
    store = RedisConversationStore(conn, 3600)
    replica_pid = deployment.replica.pid
    assert replica_pid is not None
    try:
        await store.add_user_message(
            "u", "c", {"role": "user", "content": "q", "created_at": 1.0}, title="q"
        )
        answer = {"role": "assistant", "content": "a", "created_at": 2.0, "stream_id": "s"}
        os.kill(replica_pid, signal.SIGSTOP)
        try:
            task = asyncio.ensure_future(store.store_answer("u", "c", "s", answer))
            await asyncio.sleep(1.0)
            assert not task.done(), "the answer was taken as stored without a replica's copy"
        finally:
            os.kill(replica_pid, signal.SIGCONT)
        async with asyncio.timeout(4):
            assert await task is True
        with deployment.replica.client() as replica:
            assert replica.hlen(conn.keys.conversation("u", "c", "answers")) == 1
    finally:
        await conn.close()


async def test_regenerating_drops_the_last_answer_once_on_every_topology(
    backend: RedisConnection | None,
) -> None:
    # One script on the user's hash-tagged keys: also on Cluster (one slot) and through the
    # durable write path on Sentinel (a repeat after a failover drops nothing more).
    store = _store(backend)
    user, conversation = f"u-{unique_prefix()}", "c1"
    await store.add_user_message(
        user, conversation, {"role": "user", "content": "q", "created_at": 1.0}, title="q"
    )
    answer = {"role": "assistant", "content": "a", "created_at": 2.0, "stream_id": "s1"}
    assert await store.store_answer(user, conversation, "s1", answer) is True
    assert await store.drop_last_answer(user, conversation, request_id="r1") is True
    assert await store.drop_last_answer(user, conversation, request_id="r1") is False
    assert await store.store_answer(user, conversation, "s1", answer) is False  # stays dropped
    found = await store.get(user, conversation)
    assert [m["role"] for m in found["messages"]] == ["user"]


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(120)
async def test_an_answer_is_stored_across_a_cluster_down_spell(cluster_factory: Any) -> None:
    # While a slot has no master it can serve from (a failover's few seconds), commands on
    # it are answered CLUSTERDOWN, and redis-py gives up after REDIS_RETRY_MAX_ATTEMPTS.
    # The answer's store must outlast that (it once logged the error and lost the answer).
    # Here the slot's master forgets it serves the slot (so it answers CLUSTERDOWN, while
    # the other nodes still send the client to it), then takes it back.
    cluster = cluster_factory(replicas_per_master=0)
    connection = await connect(
        redis_config(",".join(cluster.urls()), prefix=unique_prefix(), redis_retry_max_attempts=1)
    )
    try:
        store = RedisConversationStore(connection, 3600)
        await store.add_user_message(
            "u1", "c1", {"role": "user", "content": "hi", "created_at": 1.0}, title="hi"
        )
        key = connection.keys.conversation("u1", "c1", "msgs")
        with cluster.nodes[0].client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            ranges = client.execute_command("CLUSTER", "SLOTS")
        owner = next(r[2][1] for r in ranges if r[0] <= slot <= r[1])
        master = next(n for n in cluster.nodes if n.port == owner)
        with master.client() as client:
            client.execute_command("CLUSTER", "DELSLOTS", slot)
        answer = {"role": "assistant", "content": "hello", "created_at": 2.0, "stream_id": "s1"}
        storing = asyncio.create_task(store_answer_retrying(store, "u1", "c1", "s1", answer))
        await asyncio.sleep(2)
        assert not storing.done(), "the store gave up while the slot had no master"
        with master.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTS", slot)
        assert await asyncio.wait_for(storing, 30) is True
        conversation = await store.get("u1", "c1")
        assert conversation is not None
        assert [m["content"] for m in conversation["messages"]] == ["hi", "hello"]
    finally:
        await connection.close()
