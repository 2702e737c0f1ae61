"""Renaming and deleting conversations over HTTP: 200/204, 404 for anything not the
session's, 4xx with a reason for bad bodies, and a running answer stopped by the delete."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from chatscale.config import load_settings
from tests.server.helpers import ServerThread


async def _conversation(client: httpx.AsyncClient, message: str = "hello") -> str:
    started = await client.post("/api/chat", json={"message": message})
    assert started.status_code == 202, started.text
    conversation_id: str = started.json()["conversation_id"]
    return conversation_id


async def test_rename_sets_the_title_in_place(client: httpx.AsyncClient) -> None:
    first = await _conversation(client, "first")
    second = await _conversation(client, "second")
    renamed = await client.patch(
        f"/api/conversations/{first}", json={"title": "  Trip\nto   Lyon  "}
    )
    assert renamed.status_code == 200, renamed.text
    body = renamed.json()
    assert body["id"] == first and body["title"] == "Trip to Lyon"
    assert "messages" not in body
    listed = (await client.get("/api/conversations")).json()["conversations"]
    assert [(c["id"], c["title"]) for c in listed] == [(second, "second"), (first, "Trip to Lyon")]
    assert (await client.get(f"/api/conversations/{first}")).json()["title"] == "Trip to Lyon"


async def test_delete_removes_it_for_good(client: httpx.AsyncClient) -> None:
    kept = await _conversation(client, "keep")
    gone = await _conversation(client, "drop")
    deleted = await client.delete(f"/api/conversations/{gone}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get(f"/api/conversations/{gone}")).status_code == 404
    listed = (await client.get("/api/conversations")).json()["conversations"]
    assert [c["id"] for c in listed] == [kept]
    again = await client.delete(f"/api/conversations/{gone}")
    assert again.status_code == 404 and again.json() == {"error": "conversation not found"}


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
@pytest.mark.parametrize("conversation_id", ["nope", "a.b", "a%20b", "x" * 101])
async def test_unknown_or_malformed_ids_are_not_found(
    client: httpx.AsyncClient, method: str, conversation_id: str
) -> None:
    body: dict[str, Any] = {"json": {"title": "x"}} if method == "PATCH" else {}
    response = await client.request(method, f"/api/conversations/{conversation_id}", **body)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "conversation not found"


async def test_another_sessions_conversation_is_not_found(
    server: ServerThread, client: httpx.AsyncClient
) -> None:
    theirs = await _conversation(client, "mine")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as stranger:
        url = f"/api/conversations/{theirs}"
        assert (await stranger.patch(url, json={"title": "x"})).status_code == 404
        assert (await stranger.delete(url)).status_code == 404
    assert (await client.get(f"/api/conversations/{theirs}")).json()["title"] == "mine"


@pytest.mark.parametrize(
    ("content", "headers", "status", "error"),
    [
        (b'{"title": ""}', {}, 422, "title: String should have at least 1 character"),
        (b'{"title": " \\t\\n "}', {}, 422, "title: String should match pattern"),
        (b'{"title": "' + b"x" * 81 + b'"}', {}, 422, "title: String should have at most 80"),
        (b'{"title": 5}', {}, 422, "title: Input should be a valid string"),
        (b'{"title": null}', {}, 422, "title: Input should be a valid string"),
        (b"{}", {}, 422, "title: Field required"),
        (b'{"title": "x", "pinned": true}', {}, 422, "pinned: Extra inputs are not permitted"),
        (b'["title"]', {}, 400, "the body must be a JSON object"),
        (b'{"title": ', {}, 400, "malformed JSON body"),
        (b"[" * 60_000, {}, 400, "malformed JSON body"),
        (b'{"title": "' + b"x" * 70_000 + b'"}', {}, 413, "request body too large"),
        (b"\xff\xfe", {}, 400, "malformed JSON body"),
        (b'{"title": "x"}', {"content-type": "text/plain"}, 415, "expected a JSON body"),
    ],
)
async def test_bad_rename_bodies_are_refused_with_the_reason(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    conversation_id = await _conversation(client)
    response = await client.patch(
        f"/api/conversations/{conversation_id}",
        content=content,
        headers={"content-type": "application/json", **headers},
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith(error)
    assert (await client.get(f"/api/conversations/{conversation_id}")).json()["title"] == "hello"


async def test_cross_origin_rename_and_delete_are_refused(
    server: ServerThread, client: httpx.AsyncClient
) -> None:
    conversation_id = await _conversation(client)
    url = f"/api/conversations/{conversation_id}"
    evil = {"Origin": "https://evil.example"}
    for response in (
        await client.patch(url, json={"title": "pwned"}, headers=evil),
        await client.delete(url, headers=evil),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["error"].startswith("cross-origin request refused")
    own = {"Origin": f"http://127.0.0.1:{server.port}"}
    assert (await client.patch(url, json={"title": "ok"}, headers=own)).status_code == 200
    assert (await client.delete(url, headers=own)).status_code == 204


async def test_delete_stops_a_running_answer_which_is_then_not_stored() -> None:
    settings = load_settings(demo_tokens_per_second=20, demo_response_tokens=200)
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = (await client.post("/api/chat", json={"message": "long"})).json()
            status_url = f"/api/chat/stream/{started['stream_id']}/status"
            assert (await client.get(status_url)).json()["status"] == "running"
            deleted = await client.delete(f"/api/conversations/{started['conversation_id']}")
            assert deleted.status_code == 204
            for _ in range(50):
                status = (await client.get(status_url)).json()["status"]
                if status != "running":
                    break
                await asyncio.sleep(0.1)
            assert status == "aborted"
            await asyncio.sleep(0.3)  # the recorder ran: nothing brought the conversation back
            assert (await client.get("/api/conversations")).json() == {"conversations": []}
            gone = await client.get(f"/api/conversations/{started['conversation_id']}")
            assert gone.status_code == 404


async def test_a_wrong_method_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.request("PUT", "/api/conversations/abc")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    assert (await client.put("/api/chat")).headers["allow"] == "POST"
