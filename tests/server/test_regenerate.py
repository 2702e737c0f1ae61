"""``POST /api/chat`` with ``regenerate``: the conversation's last answer is replaced by a new
answer to its last user message, which the model writes without seeing the old one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chatscale.config import load_settings
from chatscale.llm import ChatMessage
from chatscale.server.schemas import ActiveStreams
from tests.server.helpers import ServerThread, expected, parse, read_events, text_of


async def _start(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/chat", json=body)
    assert response.status_code == 202, response.text
    started: dict[str, Any] = response.json()
    return started


async def _stored(client: httpx.AsyncClient, conversation_id: str, count: int) -> list[Any]:
    """The conversation's messages once it holds ``count`` of them with the last one an
    answer (answers are stored just after their final event)."""
    messages: list[Any] = []
    for _ in range(300):
        found = (await client.get(f"/api/conversations/{conversation_id}")).json()
        messages = found["messages"]
        if len(messages) == count and messages[-1]["role"] == "assistant":
            return messages
        await asyncio.sleep(0.02)
    raise AssertionError(f"the conversation holds {messages}")


async def _answered(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    started = await _start(client, **body)
    await read_events(client, f"/api/chat/stream/{started['stream_id']}")
    return started


async def test_regenerate_replaces_the_last_answer(client: httpx.AsyncClient) -> None:
    first = await _answered(client, message="hello")
    conversation = first["conversation_id"]
    second = await _answered(client, message="more", conversation_id=conversation)
    before = await _stored(client, conversation, 4)
    again = await _start(client, regenerate=True, conversation_id=conversation)
    assert again["conversation_id"] == conversation and again["status"] == "started"
    assert again["stream_id"] != second["stream_id"] and again["resume_token"]
    events = await read_events(client, f"/api/chat/stream/{again['stream_id']}")
    after = await _stored(client, conversation, 4)
    # One answer to "more", the new one; the first turn untouched.
    assert after[:3] == before[:3]
    assert after[3]["stream_id"] == again["stream_id"] and after[3]["status"] == "done"
    # The model saw the history up to "more", not the dropped answer: a re-sent question
    # (history hello, answer, more, answer, more) would have another text.
    history = [ChatMessage("user", "hello"), ChatMessage("assistant", before[1]["content"])]
    assert after[3]["content"] == text_of(events) == expected("more", history=history)
    resent = [*history, ChatMessage("user", "more"), ChatMessage("assistant", "x")]
    assert text_of(events) != expected("more", history=resent)


async def test_a_retried_regenerate_drops_one_answer(client: httpx.AsyncClient) -> None:
    first = await _answered(client, message="hello")
    conversation = first["conversation_id"]
    body = {"regenerate": True, "conversation_id": conversation, "client_request_id": "regen-1"}
    again = await _start(client, **body)
    # The same request again (its answer lost, say) returns the same stream...
    same = await _start(client, **body)
    assert same["stream_id"] == again["stream_id"]
    await read_events(client, f"/api/chat/stream/{again['stream_id']}")
    stored = await _stored(client, conversation, 2)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["stream_id"] == again["stream_id"]
    # ... also after the answer ended (not a second drop); the key with another request,
    # or with the Idempotency-Key header naming it, follows the usual rules.
    assert (await _start(client, **body))["stream_id"] == again["stream_id"]
    other = await client.post(
        "/api/chat", json={"message": "hello", "client_request_id": "regen-1"}
    )
    assert other.status_code == 409 and "another request" in other.json()["error"]
    assert await _stored(client, conversation, 2) == stored


async def test_the_started_announcement_says_regenerate(client: httpx.AsyncClient) -> None:
    announced: list[Any] = []

    async def listen() -> None:
        async with client.stream("GET", "/api/events") as response:
            async for event in parse(response.aiter_lines()):
                if event.event == "started":
                    announced.append(event.data)
                    if len(announced) == 2:
                        return

    first = await _start(client, message="hello")  # also makes the session
    listener = asyncio.create_task(listen())
    await read_events(client, f"/api/chat/stream/{first['stream_id']}")
    await _stored(client, first["conversation_id"], 2)
    await asyncio.sleep(0.2)
    await _answered(client, message="next", conversation_id=first["conversation_id"])
    await _stored(client, first["conversation_id"], 4)
    again = await _start(client, regenerate=True, conversation_id=first["conversation_id"])
    await asyncio.wait_for(listener, 10)
    assert "regenerate" not in announced[0]
    assert announced[1]["stream_id"] == again["stream_id"]
    assert announced[1]["regenerate"] is True and announced[1]["message"] == "next"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"regenerate": True}, ["body", "conversation_id"]),
        ({"regenerate": True, "conversation_id": None}, ["body", "conversation_id"]),
        ({"regenerate": True, "conversation_id": "c", "message": "hi"}, ["body", "message"]),
        ({"regenerate": "yes", "conversation_id": "c"}, ["body", "regenerate"]),
        ({"regenerate": 1, "conversation_id": "c"}, ["body", "regenerate"]),
        ({"regenerate": False, "conversation_id": "c"}, ["body", "message"]),
        ({}, ["body", "message"]),
        ({"message": None}, ["body", "message"]),
    ],
)
async def test_bad_combinations_name_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[str]
) -> None:
    response = await client.post("/api/chat", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["loc"] == loc
    assert loc[-1] in response.json()["error"]


async def test_regenerate_in_an_unknown_conversation_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/chat", json={"regenerate": True, "conversation_id": "never-created"}
    )
    assert response.status_code == 404
    assert response.json() == {"error": "conversation not found"}
    assert (await client.get("/api/conversations")).json() == {"conversations": []}
    # Another session's conversation is unknown too.
    mine = await _answered(client, message="hello")
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10) as stranger:
        theirs = await stranger.post(
            "/api/chat", json={"regenerate": True, "conversation_id": mine["conversation_id"]}
        )
    assert theirs.status_code == 404


@pytest.fixture
async def slow() -> AsyncIterator[httpx.AsyncClient]:
    """The demo at 10 tokens/s: an answer runs 2 s."""
    settings = load_settings(demo_tokens_per_second=10, demo_response_tokens=20)
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield client


async def test_regenerate_while_an_answer_runs_is_409(slow: httpx.AsyncClient) -> None:
    running = await _start(slow, message="hello")
    conversation = running["conversation_id"]
    response = await slow.post(
        "/api/chat", json={"regenerate": True, "conversation_id": conversation}
    )
    assert response.status_code == 409, response.text
    assert "running" in response.json()["error"]
    # Stopped, it is stored as such; then regenerating replaces it with a whole answer.
    stop = await slow.post(f"/api/chat/stream/{running['stream_id']}/abort")
    assert stop.json()["aborted"] is True
    stopped = await _stored(slow, conversation, 2)
    assert stopped[1]["status"] == "aborted"
    again = await _start(slow, regenerate=True, conversation_id=conversation, max_tokens=3)
    events = await read_events(slow, f"/api/chat/stream/{again['stream_id']}")
    stored = await _stored(slow, conversation, 2)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["stream_id"] == again["stream_id"] and stored[1]["status"] == "done"
    assert stored[1]["content"] == text_of(events) == expected("hello", 3)


async def test_an_answer_being_recorded_is_listed_and_a_regeneration_waits_for_it() -> None:
    # Between an answer's final event and its recording, a tab found it neither running nor
    # stored, and a regeneration sent then started beside it: both answers were kept.
    with ServerThread(load_settings()) as server:
        conversations = server.services.conversations
        assert conversations is not None
        store_answer = conversations.store_answer

        async def slowly(*args: Any) -> bool:
            await asyncio.sleep(0.8)
            stored: bool = await store_answer(*args)
            return stored

        conversations.store_answer = slowly
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            first = await _answered(client, message="hello")
            conversation = first["conversation_id"]
            listing = (await client.get("/api/chat/active")).json()
            ActiveStreams.model_validate(listing)  # as /openapi.json describes it
            active = listing["streams"]
            assert [(s["stream_id"], s["status"]) for s in active] == [(first["stream_id"], "done")]
            stored = (await client.get(f"/api/conversations/{conversation}")).json()
            assert [m["role"] for m in stored["messages"]] == ["user"]  # not recorded yet
            again = await _start(client, regenerate=True, conversation_id=conversation)
            await read_events(client, f"/api/chat/stream/{again['stream_id']}")
            await _stored(client, conversation, 2)
            await asyncio.sleep(1.0)  # nothing else is stored later
            after = (await client.get(f"/api/conversations/{conversation}")).json()["messages"]
            assert [(m["role"], m.get("stream_id")) for m in after] == [
                ("user", None),
                ("assistant", again["stream_id"]),
            ]
