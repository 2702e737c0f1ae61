"""The HTTP API on the embedded default: start, follow, resume, abort, conversations."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx

from chatscale.llm import ChatMessage
from tests.server.helpers import ServerThread, expected, read_events, text_of
from tests.server.openapi_answers import Document


async def start(client: httpx.AsyncClient, message: str = "hello", **extra: Any) -> dict[str, Any]:
    response = await client.post("/api/chat", json={"message": message, **extra})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "started"
    return body


async def test_whole_answer_streams_with_ids_and_one_final_event(
    client: httpx.AsyncClient,
) -> None:
    started = await start(client, "what is chatscale?")
    events = await read_events(client, f"/api/chat/stream/{started['stream_id']}")
    assert [e.id for e in events] == [str(i) for i in range(1, len(events) + 1)]
    assert events[-1].event == "done"
    assert [e.event for e in events].count("done") == 1
    assert text_of(events) == expected("what is chatscale?")
    # The final event carries no copy of the answer (the deltas have it): a stalled reader
    # must not hold a whole answer in its connection's last frame.
    assert events[-1].data == {"finish_reason": "stop"}


async def test_resume_after_last_event_id_or_after_param(client: httpx.AsyncClient) -> None:
    started = await start(client, "resume me")
    url = f"/api/chat/stream/{started['stream_id']}"
    first = await read_events(client, url, limit=3)
    assert len(first) == 3
    by_header = await read_events(client, url, headers={"Last-Event-ID": first[-1].id or ""})
    assert by_header[0].id == "4"
    assert text_of(first) + text_of(by_header) == expected("resume me")
    by_query = await read_events(client, f"{url}?after=2")
    assert by_query[0].id == "3"
    # The header wins over an older ?after (EventSource keeps its creation URL).
    both = await read_events(client, f"{url}?after=1", headers={"Last-Event-ID": "3"})
    assert both[0].id == "4"
    # A finished stream can still be resumed, from any point, including its end.
    last = by_header[-1].id
    assert (await client.get(url, headers={"Last-Event-ID": last or ""})).status_code == 204


def _token_claims(token: str) -> tuple[str, str]:
    """The stream and owner a resume token names (see chatscale.server.resume)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims["s"], claims["o"]


async def test_same_client_request_id_returns_the_same_stream(
    client: httpx.AsyncClient,
) -> None:
    one = await start(client, "once", client_request_id="req-1")
    again = await start(client, "once", client_request_id="req-1")
    other = await start(client, "once", client_request_id="req-2")
    # The same answer; its resume token is minted with each reply (its expiry counts from
    # then, in whole seconds), and both name the same stream for the same owner.
    token_one, token_again = one.pop("resume_token"), again.pop("resume_token")
    assert one == again
    assert _token_claims(token_one) == _token_claims(token_again)
    assert other["stream_id"] != one["stream_id"]
    await read_events(client, f"/api/chat/stream/{one['stream_id']}")
    conversation = (await client.get(f"/api/conversations/{one['conversation_id']}")).json()
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]


async def test_another_session_sees_nothing(
    server: ServerThread, client: httpx.AsyncClient
) -> None:
    started = await start(client)
    stream_id = started["stream_id"]
    async with httpx.AsyncClient(base_url=server.url) as stranger:
        answers = [
            await stranger.get(f"/api/chat/stream/{stream_id}"),
            await stranger.get(f"/api/chat/stream/{stream_id}/status"),
            await stranger.post(f"/api/chat/stream/{stream_id}/abort"),
            await stranger.get(f"/api/conversations/{started['conversation_id']}"),
        ]
        unknown = await stranger.get("/api/chat/stream/doesnotexist")
        listed = (await stranger.get("/api/conversations")).json()
    assert [a.status_code for a in answers] == [404] * 4
    assert answers[0].json() == unknown.json() == {"error": "stream not found"}
    assert listed == {"conversations": []}


async def test_abort_stops_the_answer_and_keeps_the_partial_text(
    server: ServerThread,
) -> None:
    from chatscale.config import load_settings

    with ServerThread(load_settings(demo_tokens_per_second=20, demo_response_tokens=500)) as slow:
        async with httpx.AsyncClient(base_url=slow.url, timeout=10) as client:
            started = await start(client, "a long one")
            url = f"/api/chat/stream/{started['stream_id']}"
            first = await read_events(client, url, limit=2)
            answer = await client.post(f"{url}/abort")
            assert answer.json() == {"aborted": True, "acknowledged": True, "status": "aborted"}
            rest = await read_events(client, url, headers={"Last-Event-ID": first[-1].id or ""})
            assert rest[-1].event == "aborted"
            assert "text" not in rest[-1].data
            partial = text_of(first) + text_of(rest)
            assert 0 < len(partial) < len(expected("a long one", 500))
            status = (await client.get(f"{url}/status")).json()
            assert status["status"] == "aborted" and status["text"] == partial
            conversation = await _wait_for_answer(client, started["conversation_id"])
            assert conversation["messages"][-1]["status"] == "aborted"
            assert conversation["messages"][-1]["content"] == partial


async def _wait_for_answer(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    for _ in range(200):
        found: dict[str, Any] = (await client.get(f"/api/conversations/{conversation_id}")).json()
        if found["messages"][-1]["role"] == "assistant":
            return found
        await asyncio.sleep(0.02)
    raise AssertionError("the answer was never stored")


async def test_answer_is_stored_once_without_any_reader(client: httpx.AsyncClient) -> None:
    started = await start(client, "nobody listens")
    conversation = await _wait_for_answer(client, started["conversation_id"])
    await asyncio.sleep(0.1)
    conversation = (await client.get(f"/api/conversations/{started['conversation_id']}")).json()
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
    answer = conversation["messages"][1]
    assert answer["content"] == expected("nobody listens")
    assert answer["status"] == "done" and answer["stream_id"] == started["stream_id"]
    assert conversation["title"] == "nobody listens"


async def test_follow_up_uses_the_conversation_history(client: httpx.AsyncClient) -> None:
    first = await start(client, "first question")
    await read_events(client, f"/api/chat/stream/{first['stream_id']}")
    await _wait_for_answer(client, first["conversation_id"])
    second = await start(client, "second", conversation_id=first["conversation_id"])
    assert second["conversation_id"] == first["conversation_id"]
    events = await read_events(client, f"/api/chat/stream/{second['stream_id']}")
    history = [
        ChatMessage("user", "first question"),
        ChatMessage("assistant", expected("first question")),
    ]
    assert text_of(events) == expected("second", history=history)
    listed = (await client.get("/api/conversations")).json()["conversations"]
    assert [c["id"] for c in listed] == [first["conversation_id"]]


async def test_active_list_and_event_feed(server: ServerThread, client: httpx.AsyncClient) -> None:
    from tests.server.helpers import parse

    seen: list[Any] = []

    async def listen() -> None:
        async with client.stream("GET", "/api/events") as response:
            async for event in parse(response.aiter_lines()):
                seen.append(event)
                if event.event == "ended":
                    return

    await client.get("/api/conversations")  # the session cookie first, shared by both
    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    started = await start(client, "announce me", client_request_id="tab-1")
    active = (await client.get("/api/chat/active")).json()["streams"]
    assert [s["stream_id"] for s in active] == [started["stream_id"]]
    assert active[0]["conversation_id"] == started["conversation_id"]
    await asyncio.wait_for(listener, 10)
    assert [e.event for e in seen] == ["started", "ended"]
    assert seen[0].data["stream_id"] == started["stream_id"]
    assert seen[0].data["client_request_id"] == "tab-1"
    assert seen[1].data["status"] == "done"
    assert (await client.get("/api/chat/active")).json() == {"streams": []}


async def test_models_page_openapi_health_and_metrics(client: httpx.AsyncClient) -> None:
    models = (await client.get("/api/models")).json()
    assert models["default"] == "demo"
    assert models["models"][0]["demo"] is True
    page = await client.get("/")
    assert page.status_code == 200 and "chatscale" in page.text
    assert (await client.get("/static/app.js")).status_code == 200
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert {"/api/chat", "/api/chat/stream/{stream_id}", "/api/events"} <= set(document["paths"])
    assert "ChatRequest" in document["components"]["schemas"]
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json()["status"] == "ready"
    await read_events(client, f"/api/chat/stream/{(await start(client))['stream_id']}")
    metrics = (await client.get("/metrics")).text
    assert 'chatscale_http_requests_total{method="POST",route="/api/chat",status="202"} 1.0' in (
        metrics
    )
    assert "chatscale_streams_jobs_created_total 1.0" in metrics
    assert "chatscale_chats_started_total 1.0" in metrics


async def test_event_streams_fit_the_document(client: httpx.AsyncClient) -> None:
    """The chat stream's events (and the AI SDK's) are what /openapi.json says of each
    event, as a client parses them (what schemathesis checks when it reaches one)."""
    document = (await client.get("/openapi.json")).json()
    started = await start(client, "hello")
    doc = Document(document, "/api/chat/stream/{stream_id}")
    answer = doc.check(await client.get(f"/api/chat/stream/{started['stream_id']}"))
    assert answer.status_code == 200 and ("GET", 200, "text/event-stream") in doc.seen
    ui = Document(document, "/api/ai-sdk/chat")
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    body = {"id": "chat-1", "messages": [message], "trigger": "submit-message"}
    answer = ui.check(await client.post("/api/ai-sdk/chat", json=body))
    assert answer.status_code == 200, answer.text
