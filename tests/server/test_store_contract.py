"""Every conversation store keeps the same contract (chatscale.server.store): memory, Redis,
SQLite and PostgreSQL, through :func:`create_conversation_store` as the server builds them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatscale.db.database import Database
from chatscale.db.url import parse_database_url
from chatscale.paging import page_of_list
from chatscale.redis import RedisConnection
from chatscale.server.store import ConversationStore, create_conversation_store


@pytest.fixture(params=["memory", "redis", "sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> RedisConnection | str | None:
    """Nothing (memory), a Redis connection, or a database URL."""
    if request.param == "memory":
        return None
    if request.param == "redis":
        connection: RedisConnection = request.getfixturevalue("standalone_conn")
        return connection
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
async def store(where: RedisConnection | str | None) -> AsyncIterator[ConversationStore]:
    if not isinstance(where, str):
        yield create_conversation_store(where, 3600)
        return
    database = Database(parse_database_url(where))
    await database.start(migrate=True)
    try:
        yield create_conversation_store(None, 3600, database)
    finally:
        await database.close()


def _message(text: str, **more: Any) -> dict[str, Any]:
    return {"role": "user", "content": text, "created_at": 1.0, **more}


async def test_rename(store: ConversationStore) -> None:
    await store.add_user_message("u1", "c1", _message("q"), title="q")
    assert await store.rename("u1", "c1", "renamed") is True
    assert (await store.get("u1", "c1") or {})["title"] == "renamed"
    assert [c["title"] for c in await store.list("u1")] == ["renamed"]
    assert await store.rename("u1", "missing", "x") is False
    assert await store.rename("u2", "c1", "x") is False  # another user's
    assert await store.get("u1", "missing") is None  # rename created nothing


async def test_delete(store: ConversationStore) -> None:
    await store.add_user_message("u1", "c1", _message("q"), title="q")
    await store.add_user_message("u1", "c2", _message("r"), title="r")
    answer = {"role": "assistant", "content": "a", "created_at": 2.0, "stream_id": "s1"}
    await store.store_answer("u1", "c1", "s1", answer)
    assert await store.delete("u2", "c1") is False  # another user's
    assert await store.delete("u1", "c1") is True
    assert await store.get("u1", "c1") is None
    assert [c["id"] for c in await store.list("u1")] == ["c2"]
    assert await store.delete("u1", "c1") is False
    # A late answer of the deleted conversation does not bring it back.
    assert await store.store_answer("u1", "c1", "s2", {**answer, "stream_id": "s2"}) is False
    assert await store.get("u1", "c1") is None
    assert [c["id"] for c in await store.list("u1")] == ["c2"]


async def test_list_pages_the_same_everywhere(store: ConversationStore) -> None:
    for i in range(5):
        await store.add_user_message("u1", f"c{i}", _message(str(i)), title=str(i))
    whole = await store.list("u1")
    assert [c["id"] for c in whole] == ["c4", "c3", "c2", "c1", "c0"]
    first = page_of_list(whole, 2, None)
    assert [c["id"] for c in first.conversations] == ["c4", "c3"]
    assert first.next_cursor is not None
    second = page_of_list(whole, 2, first.next_cursor)
    assert [c["id"] for c in second.conversations] == ["c2", "c1"]


def _answer(stream_id: str, text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "created_at": 2.0, "stream_id": stream_id}


async def test_drop_last_answer(store: ConversationStore) -> None:
    await store.add_user_message("u1", "c1", _message("q1"), title="q1")
    await store.store_answer("u1", "c1", "s1", _answer("s1", "a1"))
    await store.add_user_message("u1", "c1", _message("q2"), title="q1")
    await store.store_answer("u1", "c1", "s2", _answer("s2", "a2"))
    assert await store.drop_last_answer("u2", "c1", request_id="r1") is False  # another user's
    assert await store.drop_last_answer("u1", "missing", request_id="r1") is False
    assert await store.get("u1", "missing") is None  # created nothing
    assert await store.drop_last_answer("u1", "c1", request_id="r1") is True
    found = await store.get("u1", "c1")
    assert found is not None
    assert [m["content"] for m in found["messages"]] == ["q1", "a1", "q2"]
    # The last message is the user's now: nothing more to drop, whatever the request.
    assert await store.drop_last_answer("u1", "c1", request_id="r2") is False
    # The dropped answer's stream id stays taken: a late store of it does not come back.
    assert await store.store_answer("u1", "c1", "s2", _answer("s2", "a2 again")) is False
    # The new answer is stored and is the last message.
    assert await store.store_answer("u1", "c1", "s3", _answer("s3", "a3")) is True
    found = await store.get("u1", "c1")
    assert found is not None
    assert [m["content"] for m in found["messages"]] == ["q1", "a1", "q2", "a3"]
    assert [c["id"] for c in await store.list("u1")] == ["c1"]


async def test_drop_last_answer_once_per_request(store: ConversationStore) -> None:
    await store.add_user_message("u1", "c1", _message("q1"), title="q1")
    await store.store_answer("u1", "c1", "s1", _answer("s1", "a1"))
    assert await store.drop_last_answer("u1", "c1", request_id="r1") is True
    await store.store_answer("u1", "c1", "s2", _answer("s2", "a2"))
    # The same request again (a retry, a write repeated after a failover) drops no second
    # answer; another request does.
    assert await store.drop_last_answer("u1", "c1", request_id="r1") is False
    found = await store.get("u1", "c1")
    assert found is not None
    assert [m["content"] for m in found["messages"]] == ["q1", "a2"]
    assert await store.drop_last_answer("u1", "c1", request_id="r2") is True
    found = await store.get("u1", "c1")
    assert found is not None
    assert [m["content"] for m in found["messages"]] == ["q1"]


async def test_drop_last_answer_keeps_user_messages(store: ConversationStore) -> None:
    await store.add_user_message("u1", "c1", _message("q1"), title="q1")
    assert await store.drop_last_answer("u1", "c1", request_id="r1") is False
    found = await store.get("u1", "c1")
    assert found is not None
    assert [m["content"] for m in found["messages"]] == ["q1"]
