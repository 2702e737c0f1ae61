"""Where the chat API used to surprise clients (issue 12, section 2): each test failed
before its fix. The end of a stream is a 204, an abort of an ended answer says so, a reused
idempotency key with another request is a conflict, an unknown conversation is a 404,
invalid input names its fields, one status vocabulary everywhere, and per-request options."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from chatscale.config import load_settings
from tests.server.helpers import ServerThread, expected, read_events, text_of


async def _start(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/chat", json={"message": "hello", **body})
    assert response.status_code == 202, response.text
    started: dict[str, Any] = response.json()
    return started


async def _ended(client: httpx.AsyncClient, stream_id: str) -> dict[str, Any]:
    for _ in range(300):
        status: dict[str, Any] = (await client.get(f"/api/chat/stream/{stream_id}/status")).json()
        if status["status"] != "running":
            return status
        await asyncio.sleep(0.02)
    raise AssertionError("the answer never ended")


async def test_resuming_after_the_final_event_is_204_so_eventsource_stops(
    client: httpx.AsyncClient,
) -> None:
    started = await _start(client)
    url = f"/api/chat/stream/{started['stream_id']}"
    events = await read_events(client, url)
    assert events[-1].event == "done"
    after_end = await client.get(url, headers={"Last-Event-ID": events[-1].id or ""})
    assert after_end.status_code == 204 and after_end.content == b""
    assert (await client.get(f"{url}?after={events[-1].id}")).status_code == 204
    # Before the final event it is still a stream: the final event only.
    last = await read_events(client, url, headers={"Last-Event-ID": events[-2].id or ""})
    assert [e.event for e in last] == ["done"]


async def test_abort_of_an_ended_answer_says_it_was_not_aborted(
    client: httpx.AsyncClient,
) -> None:
    started = await _start(client)
    await read_events(client, f"/api/chat/stream/{started['stream_id']}")
    answer = await client.post(f"/api/chat/stream/{started['stream_id']}/abort")
    assert answer.status_code == 200
    assert answer.json() == {"aborted": False, "acknowledged": False, "status": "done"}
    status = await _ended(client, started["stream_id"])
    assert status["status"] == "done" and status["text"] == expected("hello")


async def test_a_reused_idempotency_key_with_another_request_is_a_conflict(
    client: httpx.AsyncClient,
) -> None:
    first = await _start(client, client_request_id="key-1")
    same = await _start(client, client_request_id="key-1")
    assert (same["stream_id"], same["conversation_id"]) == (
        first["stream_id"],
        first["conversation_id"],
    )
    other = await client.post("/api/chat", json={"message": "bye", "client_request_id": "key-1"})
    assert other.status_code == 409, other.text
    assert "another request" in other.json()["error"]
    options = await client.post(
        "/api/chat", json={"message": "hello", "client_request_id": "key-1", "max_tokens": 3}
    )
    assert options.status_code == 409


async def test_the_idempotency_key_header_means_the_same(client: httpx.AsyncClient) -> None:
    by_header = await client.post(
        "/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": "hdr-1"}
    )
    assert by_header.status_code == 202
    by_field = await _start(client, client_request_id="hdr-1")
    assert by_field["stream_id"] == by_header.json()["stream_id"]
    other = await client.post(
        "/api/chat", json={"message": "other"}, headers={"Idempotency-Key": "hdr-1"}
    )
    assert other.status_code == 409
    both = await client.post(
        "/api/chat",
        json={"message": "hello", "client_request_id": "a"},
        headers={"Idempotency-Key": "b"},
    )
    assert both.status_code == 400
    assert both.json()["fields"][0]["loc"] == ["header", "Idempotency-Key"]
    malformed = await client.post(
        "/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": "no spaces"}
    )
    assert malformed.status_code == 422
    assert malformed.json()["fields"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_an_unknown_conversation_is_404_not_a_new_one(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/chat", json={"message": "hello", "conversation_id": "never-created"}
    )
    assert response.status_code == 404
    assert response.json() == {"error": "conversation not found"}
    assert (await client.get("/api/conversations")).json() == {"conversations": []}
    # An existing one is continued.
    first = await _start(client)
    await _ended(client, first["stream_id"])
    again = await _start(client, conversation_id=first["conversation_id"])
    assert again["conversation_id"] == first["conversation_id"]


async def test_validation_errors_name_the_fields(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/chat",
        json={"message": "hi", "temperature": 9, "max_tokens": 0, "colour": "red"},
    )
    assert response.status_code == 422
    body = response.json()
    locs = {tuple(f["loc"]): f["msg"] for f in body["fields"]}
    assert set(locs) == {
        ("body", "temperature"),
        ("body", "max_tokens"),
        ("body", "colour"),
    }
    assert "less than or equal to 2" in locs[("body", "temperature")]
    assert "temperature" in body["error"] and "colour" in body["error"]
    blank = await client.post("/api/chat", json={"message": " \n"})
    assert blank.status_code == 422
    assert blank.json()["fields"] == [{"loc": ["body", "message"], "msg": "must not be blank"}]
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema says), 3.5 is not.
    integral = await client.post("/api/chat", json={"message": "hi", "max_tokens": 3.0})
    assert integral.status_code == 202, integral.text
    for bad in ({"max_tokens": True}, {"max_tokens": 3.5}, {"temperature": "0.5"}, {"system": ""}):
        answer = await client.post("/api/chat", json={"message": "hi", **bad})
        assert answer.status_code == 422, bad
        assert answer.json()["fields"][0]["loc"] == ["body", next(iter(bad))]


async def test_one_status_vocabulary_everywhere(client: httpx.AsyncClient) -> None:
    from tests.server.helpers import parse

    announced: list[Any] = []

    async def listen() -> None:
        async with client.stream("GET", "/api/events") as response:
            async for event in parse(response.aiter_lines()):
                announced.append(event)
                if event.event == "ended":
                    return

    await client.get("/api/conversations")  # one session for both requests
    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    started = await _start(client)
    active = (await client.get("/api/chat/active")).json()["streams"]
    assert [s["status"] for s in active] == ["running"]
    events = await read_events(client, f"/api/chat/stream/{started['stream_id']}")
    status = await _ended(client, started["stream_id"])
    await asyncio.wait_for(listener, 10)
    conversation = (await client.get(f"/api/conversations/{started['conversation_id']}")).json()
    # The final event's name, /status, the announcement and the stored answer: one word.
    assert events[-1].event == status["status"] == announced[-1].data["status"] == "done"
    assert conversation["messages"][-1]["status"] == "done"


async def test_max_tokens_cuts_the_answer_and_says_length() -> None:
    settings = load_settings(demo_tokens_per_second=500, demo_response_tokens=20)
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = await _start(client, max_tokens=5, temperature=0.5, system="Be brief.")
            events = await read_events(client, f"/api/chat/stream/{started['stream_id']}")
    assert events[-1].data == {"finish_reason": "length"}
    # Five tokens (deltas may be coalesced, so counted in the text): the demo's text ignores
    # the system prompt and the temperature.
    assert text_of(events) == expected("hello", 5)
    assert expected("hello").startswith(text_of(events))
