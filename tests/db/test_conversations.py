"""The SQL conversation store on SQLite and on PostgreSQL: the protocol's guarantees,
also under concurrency (several tasks, several engines as several instances would)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from chatscale.db.conversations import SqlConversationStore
from chatscale.db.database import Database
from chatscale.paging import make_cursor, parse_cursor


def user_message(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def answer(stream_id: str, text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "stream_id": stream_id, "status": "done"}


@pytest.fixture
def store(database: Database) -> SqlConversationStore:
    return SqlConversationStore(database.engine)


async def test_a_conversation_keeps_its_messages_in_order(store: SqlConversationStore) -> None:
    assert await store.add_user_message("u1", "c1", user_message("hi"), title="hi")
    assert await store.store_answer("u1", "c1", "s1", answer("s1", "hello"))
    assert await store.add_user_message("u1", "c1", user_message("again"), title="ignored")
    found = await store.get("u1", "c1")
    assert found is not None
    assert found["title"] == "hi"  # the first message's title stays
    assert [m["content"] for m in found["messages"]] == ["hi", "hello", "again"]
    assert found["messages"][1] == answer("s1", "hello")
    assert found["created_at"] <= found["updated_at"]


async def test_users_do_not_see_each_other(store: SqlConversationStore) -> None:
    await store.add_user_message("u1", "c1", user_message("mine"), title="mine")
    assert await store.get("u2", "c1") is None
    assert await store.list("u2") == []
    assert not await store.store_answer("u2", "c1", "s1", answer("s1", "x"))
    assert not await store.rename("u2", "c1", "stolen")
    assert not await store.delete("u2", "c1")
    assert (await store.get("u1", "c1") or {})["title"] == "mine"


async def test_list_is_most_recently_updated_first(store: SqlConversationStore) -> None:
    for name in ("a", "b", "c"):
        await store.add_user_message("u1", name, user_message(name), title=name)
        await asyncio.sleep(0.01)
    await store.store_answer("u1", "a", "s1", answer("s1", "a's answer"))
    listed = await store.list("u1")
    assert [c["id"] for c in listed] == ["a", "c", "b"]
    assert set(listed[0]) == {"id", "title", "created_at", "updated_at"}


async def test_a_retried_request_stores_its_message_once(store: SqlConversationStore) -> None:
    assert await store.add_user_message("u1", "c1", user_message("q"), title="q", request_id="r1")
    assert not await store.add_user_message(
        "u1", "c1", user_message("q"), title="q", request_id="r1"
    )
    # The same id in another conversation is another request.
    assert await store.add_user_message("u1", "c2", user_message("q"), title="q", request_id="r1")
    found = await store.get("u1", "c1")
    assert found is not None and len(found["messages"]) == 1


async def test_an_answer_is_stored_once_per_stream(store: SqlConversationStore) -> None:
    await store.add_user_message("u1", "c1", user_message("q"), title="q")
    assert await store.store_answer("u1", "c1", "s1", answer("s1", "first"))
    assert not await store.store_answer("u1", "c1", "s1", answer("s1", "second"))
    found = await store.get("u1", "c1")
    assert found is not None
    assert [m["content"] for m in found["messages"]] == ["q", "first"]


async def test_no_answer_without_its_conversation(store: SqlConversationStore) -> None:
    assert not await store.store_answer("u1", "gone", "s1", answer("s1", "x"))
    assert await store.get("u1", "gone") is None


async def test_rename_and_delete(store: SqlConversationStore) -> None:
    await store.add_user_message("u1", "c1", user_message("q"), title="q")
    await store.store_answer("u1", "c1", "s1", answer("s1", "a"))
    assert await store.rename("u1", "c1", "a better title")
    assert (await store.get("u1", "c1") or {})["title"] == "a better title"
    assert not await store.rename("u1", "nope", "x")
    assert await store.delete("u1", "c1")
    assert await store.get("u1", "c1") is None
    assert await store.list("u1") == []
    assert not await store.delete("u1", "c1")
    # The ids can be used again: nothing of the old messages is left.
    assert await store.add_user_message("u1", "c1", user_message("new"), title="new")
    assert await store.store_answer("u1", "c1", "s1", answer("s1", "again"))
    found = await store.get("u1", "c1")
    assert found is not None and [m["content"] for m in found["messages"]] == ["new", "again"]


async def test_unicode_and_large_messages_round_trip(store: SqlConversationStore) -> None:
    text = "héllo 🌍 \u0000 (a NUL: JSON escapes it) " + "x" * 200_000
    await store.add_user_message("u1", "c1", user_message(text), title="t")
    found = await store.get("u1", "c1")
    assert found is not None and found["messages"][0]["content"] == text


async def test_a_nul_in_a_title_is_stored(store: SqlConversationStore) -> None:
    # PostgreSQL's text cannot hold NUL: it becomes U+FFFD in titles (messages keep it).
    await store.add_user_message("u1", "c1", user_message("a\x00b"), title="a\x00b")
    assert await store.rename("u1", "c1", "c\x00d")
    found = await store.get("u1", "c1")
    assert found is not None
    assert found["title"] == "c\ufffdd"
    assert found["messages"][0]["content"] == "a\x00b"


async def test_paging_walks_the_whole_list_once(store: SqlConversationStore) -> None:
    for i in range(23):
        await store.add_user_message("u1", f"c{i:02}", user_message(str(i)), title=str(i))
    # Two conversations with the same updated_at: the id breaks the tie, none is lost.
    async with store._engine.begin() as conn:
        from sqlalchemy import update

        from chatscale.db.schema import conversations

        await conn.execute(
            update(conversations)
            .where(conversations.c.id.in_(["c05", "c06", "c07"]))
            .values(updated_at=1000.0)
        )
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.page("u1", limit=5, before=cursor)
        seen += [c["id"] for c in page.conversations]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 5
    assert sorted(seen) == sorted(f"c{i:02}" for i in range(23))
    assert len(seen) == len(set(seen))
    assert seen[-3:] == ["c07", "c06", "c05"]
    assert await store.count("u1") == 23
    assert [c["id"] for c in await store.list("u1")] == seen


async def test_a_foreign_cursor_is_refused(store: SqlConversationStore) -> None:
    for bad in ("", "abc", "1.5", "nan~x", "inf~x", "~x", "1.5~", "1.5~a\x00b", "1.5~a~b"):
        with pytest.raises(ValueError, match="not a cursor"):
            await store.page("u1", limit=5, before=bad)
    for stamp in (1.25, 1795937017.8849218, 1e16, 1e-7, 0.0):
        assert parse_cursor(make_cursor(stamp, "a-b_c")) == (stamp, "a-b_c")


async def test_concurrent_retries_store_the_message_once(
    database: Database, open_database: Callable[[], Database]
) -> None:
    # Three "instances" (engines) and several tasks each send the same request at once.
    others = [open_database() for _ in range(2)]
    for other in others:
        await other.start(migrate=False)
    stores = [SqlConversationStore(d.engine) for d in (database, *others)]
    results = await asyncio.gather(
        *(
            s.add_user_message("u1", "c1", user_message("q"), title="q", request_id="r1")
            for s in stores
            for _ in range(5)
        )
    )
    assert results.count(True) == 1
    found = await stores[0].get("u1", "c1")
    assert found is not None and len(found["messages"]) == 1


async def test_concurrent_answers_of_one_stream_are_stored_once(
    database: Database, open_database: Callable[[], Database]
) -> None:
    other = open_database()
    await other.start(migrate=False)
    stores = [SqlConversationStore(d.engine) for d in (database, other)]
    await stores[0].add_user_message("u1", "c1", user_message("q"), title="q")
    results = await asyncio.gather(
        *(s.store_answer("u1", "c1", "s1", answer("s1", "a")) for s in stores for _ in range(5))
    )
    assert results.count(True) == 1
    found = await stores[1].get("u1", "c1")
    assert found is not None
    assert [m["role"] for m in found["messages"]] == ["user", "assistant"]


async def test_concurrent_new_conversations_and_answers(store: SqlConversationStore) -> None:
    # Many conversations created at once (no lost or doubled rows, no deadlock).
    await asyncio.gather(
        *(
            store.add_user_message(f"u{i % 3}", f"c{i}", user_message(str(i)), title=str(i))
            for i in range(30)
        )
    )
    await asyncio.gather(
        *(
            store.store_answer(f"u{i % 3}", f"c{i}", f"s{i}", answer(f"s{i}", str(i)))
            for i in range(30)
        )
    )
    assert sum([await store.count(f"u{u}") for u in range(3)]) == 30
    for i in range(30):
        found = await store.get(f"u{i % 3}", f"c{i}")
        assert found is not None and len(found["messages"]) == 2


async def test_concurrent_regenerations_drop_one_answer_each_at_most(
    database: Database, open_database: Callable[[], Database]
) -> None:
    other = open_database()
    await other.start(migrate=False)
    stores = [SqlConversationStore(d.engine) for d in (database, other)]
    await stores[0].add_user_message("u1", "c1", user_message("q1"), title="q1")
    await stores[0].store_answer("u1", "c1", "s1", answer("s1", "a1"))
    await stores[0].add_user_message("u1", "c1", user_message("q2"), title="q1")
    await stores[0].store_answer("u1", "c1", "s2", answer("s2", "a2"))
    # Two "instances" repeat the same regeneration, and a second one races them: the last
    # answer is dropped once; the answer before it (after a user message) is never touched.
    results = await asyncio.gather(
        *(
            s.drop_last_answer("u1", "c1", request_id=key)
            for s in stores
            for key in ("r1", "r1", "r2")
        )
    )
    assert results.count(True) == 1
    found = await stores[1].get("u1", "c1")
    assert found is not None
    assert [m["content"] for m in found["messages"]] == ["q1", "a1", "q2"]
    # The dropped answer's row keeps its stream id taken.
    assert not await stores[1].store_answer("u1", "c1", "s2", answer("s2", "late"))
