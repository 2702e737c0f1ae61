"""Vercel AI SDK clients: ``POST /api/ai-sdk/chat`` streams the UI message stream protocol and
``GET /api/ai-sdk/chat/{chatId}/stream`` resumes (204 when nothing runs).

The protocol is checked part by part here, and end to end with the AI SDK's own client
(``tests/node/ai_sdk_client.mjs``: the ``ai`` package's AbstractChat and
DefaultChatTransport, pinned in ``tests/node/package-lock.json``), on one instance and across
two instances on Redis: the connection is cut mid-answer, the chat resumes, and the text
arrives whole and once.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatscale.config import load_settings
from chatscale.llm import ChatMessage
from tests.conftest import unique_prefix
from tests.harness.npm import installed
from tests.server.helpers import ServerThread, expected
from tests.server.procs import ServeProcess
from tests.server.rig import SECRET

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
SCRIPT = "ai_sdk_client.mjs"
API = "/api/ai-sdk/chat"
#: The oldest Node the pinned ``ai`` runs on here (its package says 22; 20 passes this test).
MIN_NODE = 20


def _body(text: str, chat_id: str = "chat-1", message_id: str = "m1", **extra: Any) -> Any:
    return {
        "id": chat_id,
        "messages": [{"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
        **extra,
    }


async def _parts(response: httpx.Response) -> list[Any]:
    """The ``data:`` payloads of a UI message stream (``[DONE]`` as the string)."""
    found: list[Any] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            found.append(payload if payload == "[DONE]" else json.loads(payload))
            if payload == "[DONE]":
                break
    return found


def _text(parts: list[Any]) -> str:
    return "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta")


@pytest.fixture
def slow_server() -> Iterator[ServerThread]:
    """The demo at 20 tokens/s: an answer runs 1.5 s, long enough to cut and resume."""
    settings = load_settings(demo_tokens_per_second=20, demo_response_tokens=30)
    with ServerThread(settings) as running:
        yield running


async def test_post_streams_the_ui_message_protocol(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", API, json=_body("hello ai sdk")) as response:
        assert response.status_code == 200
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert response.headers["content-type"].startswith("text/event-stream")
        parts = await _parts(response)
    kinds = [p if isinstance(p, str) else p["type"] for p in parts]
    assert kinds[:2] == ["start", "text-start"]
    assert kinds[-3:] == ["text-end", "finish", "[DONE]"]
    assert set(kinds[2:-3]) == {"text-delta"}
    assert parts[-2] == {"type": "finish", "finishReason": "stop"}
    assert _text(parts) == expected("hello ai sdk")
    # The chat id is the conversation, created on first use, holding the stored answer.
    for _ in range(100):
        stored = (await client.get("/api/conversations/chat-1")).json()
        if len(stored["messages"]) == 2:
            break
        await asyncio.sleep(0.02)
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["stream_id"] == parts[0]["messageId"]
    # The next message continues it: the model sees the stored history.
    async with client.stream("POST", API, json=_body("more", message_id="m2")) as response:
        follow_up = await _parts(response)
    history = [ChatMessage("user", "hello ai sdk"), ChatMessage("assistant", _text(parts))]
    assert _text(follow_up) == expected("more", history=history)


async def test_resume_replays_a_running_answer_and_is_204_otherwise(
    slow_server: ServerThread,
) -> None:
    async with httpx.AsyncClient(base_url=slow_server.url, timeout=10) as client:
        nothing = await client.get(f"{API}/chat-9/stream")
        assert nothing.status_code == 204 and nothing.content == b""
        async with client.stream("POST", API, json=_body("cut me", "chat-9")) as response:
            seen: list[Any] = []
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"text-delta"' in line:
                    seen.append(json.loads(line[6:]))
                    if len(seen) == 3:
                        break  # the connection is cut here
        async with client.stream("GET", f"{API}/chat-9/stream") as resumed:
            assert resumed.status_code == 200
            assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
            parts = await _parts(resumed)
        assert _text(parts) == expected("cut me", 30)  # a replay: whole, from the start
        assert _text(parts).startswith(_text(seen))
        assert parts[0]["type"] == "start"
        assert (await client.get(f"{API}/chat-9/stream")).status_code == 204
        # Another session's chat is not found either: nothing runs for it.
        async with httpx.AsyncClient(base_url=slow_server.url) as stranger:
            async with stranger.stream("POST", API, json=_body("mine", "chat-10")):
                assert (await client.get(f"{API}/chat-10/stream")).status_code == 204


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"trigger": "regenerate"}, ["body", "trigger"]),
        ({"trigger": "regenerate-message", "messageId": 5}, ["body", "messageId"]),
        ({"id": "../x"}, ["body", "id"]),
        ({"messages": []}, ["body", "messages"]),
        ({"temperature": 5}, ["body", "temperature"]),
        ({"unknown": 1}, ["body", "unknown"]),
        (
            {
                "messages": [
                    {"id": "a", "role": "assistant", "parts": [{"type": "text", "text": ""}]}
                ]
            },
            ["body", "messages", 0, "role"],
        ),
        (
            {"messages": [{"id": "a", "role": "user", "parts": [{"type": "file", "url": "x"}]}]},
            ["body", "messages", 0, "parts"],
        ),
        ({"messages": [{"id": "a", "role": "user"}]}, ["body", "messages", 0, "parts"]),
    ],
)
async def test_bad_requests_name_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], loc: list[Any]
) -> None:
    response = await client.post(API, json={**_body("hi"), **change})
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["loc"] == loc


async def test_options_and_a_retried_post(client: httpx.AsyncClient) -> None:
    body = _body("short please", "chat-2", max_tokens=4, system="Be brief.")
    async with client.stream("POST", API, json=body) as response:
        parts = await _parts(response)
    assert _text(parts) == expected("short please", 4)  # four tokens (deltas may coalesce)
    assert parts[-2] == {"type": "finish", "finishReason": "length"}
    # The same POST again (same user message id): the same answer, not a second one.
    async with client.stream("POST", API, json=body) as response:
        again = await _parts(response)
    assert again[0] == parts[0] and _text(again) == _text(parts)
    stored = (await client.get("/api/conversations/chat-2")).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]


# --- the AI SDK's own client -------------------------------------------------------------


def _node_project() -> Path:
    """A folder with the pinned ``ai`` package installed: tests/node when its node_modules
    is there, else a cache folder keyed by the lock file (``npm ci`` on first use)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the AI SDK client (scripts/test installs them)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < MIN_NODE:
        pytest.skip(
            f"the pinned ai package needs Node {MIN_NODE} or newer; node is {version.stdout}"
        )
    if (NODE_DIR / "node_modules" / "ai" / "package.json").exists():
        return NODE_DIR
    target = installed(NODE_DIR, "ai-sdk", "node_modules/ai/package.json", timeout_s=300)
    shutil.copyfile(NODE_DIR / SCRIPT, target / SCRIPT)
    return target


def _run_client(post: str, resume: str, message: str, **more: Any) -> dict[str, Any]:
    project = _node_project()
    options = {"post": post, "resume": resume, "message": message, "cutAfter": 3, **more}
    done = subprocess.run(
        ["node", SCRIPT, json.dumps(options)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _check_whole_and_once(result: dict[str, Any], message: str, tokens: int) -> None:
    assert result["cuts"] == 1 and result["statusAfterCut"] == "error"
    assert result["errors"] == ["TypeError: network error"]
    answer = expected(message, tokens)
    assert 0 < len(result["partial"]) < len(answer) and answer.startswith(result["partial"])
    user, assistant = result["messages"]  # no second assistant message
    assert (user["role"], user["text"]) == ("user", message)
    assert assistant["role"] == "assistant" and assistant["textParts"] == 1
    assert assistant["text"] == answer  # whole, and once (a replay replaced the partial text)
    assert result["status"] == "ready" and result["afterEnd"] is None
    methods = [(r["method"], r["status"], r["protocol"]) for r in result["requests"]]
    assert methods == [("POST", 200, "v1"), ("GET", 200, "v1"), ("GET", 204, None)]


def test_the_ai_sdk_client_resumes_a_cut_answer_whole_and_once(
    slow_server: ServerThread,
) -> None:
    result = _run_client(slow_server.url, slow_server.url, "hello from useChat")
    _check_whole_and_once(result, "hello from useChat", 30)


def test_the_ai_sdk_client_regenerates_the_last_answer_in_place(
    slow_server: ServerThread,
) -> None:
    result = _run_client(slow_server.url, slow_server.url, "again please", regenerate=True)
    answer = expected("again please", 30)
    (user, old) = result["before"]
    assert old["text"] == answer
    assert [m["role"] for m in result["regenerated"]] == ["user", "assistant"]
    assert result["regenerated"][0] == user
    new = result["regenerated"][1]
    # A new answer (its own stream), written from the history without the old one: the
    # demo writes the same text for the same history.
    assert new["id"] != old["id"] and new["text"] == answer
    assert result["statusAfterRegenerate"] == "ready" and result["errors"] == [
        "TypeError: network error"  # the cut of the first answer
    ]
    # The server holds the same: one answer, the new one.
    stored = result["stored"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", user["text"]),
        ("assistant", answer),
    ]
    assert stored[1]["stream_id"] == new["id"]
    assert [(r["method"], r["status"]) for r in result["requests"]][-1] == ("POST", 200)


async def test_regenerate_message_replaces_the_stored_answer(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", API, json=_body("hello", "chat-r")) as response:
        first = await _parts(response)
    old_id = first[0]["messageId"]
    await _stored_answer(client, "chat-r", old_id)
    # What regenerate() sends: the messages up to the user message, and the answer replaced.
    body = _body("hello", "chat-r", trigger="regenerate-message", messageId=old_id)
    async with client.stream("POST", API, json=body) as response:
        assert response.status_code == 200
        again = await _parts(response)
    new_id = again[0]["messageId"]
    assert new_id != old_id and _text(again) == expected("hello")
    stored = await _stored_answer(client, "chat-r", new_id)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    # The same POST again (a retry) is the same regeneration: its stream, no second drop.
    async with client.stream("POST", API, json=body) as response:
        retried = await _parts(response)
    assert retried[0]["messageId"] == new_id
    assert (await _stored_answer(client, "chat-r", new_id)) == stored


async def test_regenerate_message_needs_a_stored_idle_chat(slow_server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=slow_server.url, timeout=10) as client:
        body = _body("hello", "chat-new", trigger="regenerate-message")
        unknown = await client.post(API, json=body)
        assert unknown.status_code == 404, unknown.text
        assert (await client.get("/api/conversations/chat-new")).status_code == 404
        async with client.stream("POST", API, json=_body("hello", "chat-busy")) as response:
            async for line in response.aiter_lines():
                if '"text-delta"' in line:
                    break  # the answer runs on
            busy = await client.post(
                API, json=_body("hello", "chat-busy", trigger="regenerate-message")
            )
        assert busy.status_code == 409, busy.text
        assert "running" in busy.json()["error"]


async def _stored_answer(client: httpx.AsyncClient, chat_id: str, stream_id: str) -> list[Any]:
    """The chat's stored messages once the answer of ``stream_id`` is among them."""
    messages: list[Any] = []
    for _ in range(300):
        messages = (await client.get(f"/api/conversations/{chat_id}")).json()["messages"]
        if any(m.get("stream_id") == stream_id for m in messages):
            return messages
        await asyncio.sleep(0.02)
    raise AssertionError(f"the chat holds {messages}")


@pytest.fixture(
    params=[
        pytest.param("standalone", id="standalone"),
        pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
    ]
)
def redis_uri(request: pytest.FixtureRequest) -> str:
    if request.param == "standalone":
        return str(request.getfixturevalue("redis_standalone").url())
    return ",".join(request.getfixturevalue("redis_cluster").urls())


@pytest.mark.slow
def test_the_ai_sdk_client_resumes_on_another_instance(redis_uri: str, tmp_path: Path) -> None:
    env = {
        "USE_REDIS": "true",
        "REDIS_URI": redis_uri,
        "REDIS_KEY_PREFIX": unique_prefix(),
        "SESSION_SECRET": SECRET,
        "DEMO_TOKENS_PER_SECOND": "20",
        "DEMO_RESPONSE_TOKENS": "30",
    }
    one = ServeProcess(env, tmp_path / "one.log")
    two = ServeProcess(env, tmp_path / "two.log")
    try:
        one.start(wait=False)
        two.start(wait=False)
        one.wait_ready()
        two.wait_ready()
        result = _run_client(one.url, two.url, "across instances")
    finally:
        one.kill()
        two.kill()
    _check_whole_and_once(result, "across instances", 30)
    started, resumed, _ = result["requests"]
    assert started["instance"] != resumed["instance"]


async def test_a_malformed_chat_or_stream_id_is_not_found(client: httpx.AsyncClient) -> None:
    # A trailing newline (%0A) passes a ``^...$`` pattern under re.match: ids are matched whole.
    for url in (f"{API}/abc%0A/stream", f"{API}/..%2F/stream", "/api/chat/stream/abc%0A"):
        answer = await client.get(url)
        assert answer.status_code == 404, url
        assert "not found" in answer.json()["error"].lower()


async def test_a_drain_ends_the_stream_with_an_error_not_a_truncated_answer(
    tmp_path: Path,
) -> None:
    env = {"DEMO_TOKENS_PER_SECOND": "20", "DEMO_RESPONSE_TOKENS": "60"}
    server = ServeProcess(env, tmp_path / "serve.log").start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with client.stream("POST", API, json=_body("drain me")) as response:
                parts: list[Any] = []
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    payload = line[len("data: ") :]
                    parts.append(payload if payload == "[DONE]" else json.loads(payload))
                    if len(parts) == 4:
                        server.signal(signal.SIGTERM)
    finally:
        server.kill()
    kinds = [p if isinstance(p, str) else p["type"] for p in parts]
    assert kinds[-2:] == ["error", "[DONE]"] and "finish" not in kinds
    assert "resume it" in parts[-2]["errorText"]
    assert 0 < len(_text(parts)) < len(expected("drain me", 60))


async def test_abort_by_message_id_ends_the_stream_with_an_abort_part(
    slow_server: ServerThread,
) -> None:
    async with httpx.AsyncClient(base_url=slow_server.url, timeout=10) as client:
        parts: list[Any] = []
        async with client.stream("POST", API, json=_body("stop me", "chat-3")) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[len("data: ") :]
                parts.append(payload if payload == "[DONE]" else json.loads(payload))
                if payload == "[DONE]":
                    break
                if len(parts) == 4:  # start, text-start, two deltas: stop it by its id
                    message_id = parts[0]["messageId"]
                    stopped = await client.post(f"/api/chat/stream/{message_id}/abort")
                    assert stopped.json()["aborted"] is True
        kinds = [p if isinstance(p, str) else p["type"] for p in parts]
        assert kinds[-3:] == ["text-end", "abort", "[DONE]"]
        assert (await client.get(f"{API}/chat-3/stream")).status_code == 204
