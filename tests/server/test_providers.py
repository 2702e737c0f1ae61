"""The server with an OpenAI-compatible upstream: errors become ``error`` events, an abort
closes the upstream request, and answers stream through."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatscale.config import load_settings
from tests.llm.fake_openai import FakeOpenAI
from tests.server.helpers import ServerThread, free_port, read_events, text_of
from tests.server.procs import ServeProcess

KEY = "sk-test-0123456789-KEYTAIL"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(tokens=5, delay=0.02) as server:
        yield server


@pytest.fixture
def served(upstream: FakeOpenAI) -> Iterator[ServerThread]:
    settings = load_settings(openai_base_url=upstream.base_url, openai_api_key=KEY)
    with ServerThread(settings) as server:
        yield server


async def _start(client: httpx.AsyncClient, model: str) -> str:
    response = await client.post("/api/chat", json={"message": "hi", "model": model})
    assert response.status_code == 202, response.text
    stream_id: str = response.json()["stream_id"]
    return stream_id


async def test_upstream_answer_streams_through(served: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        models = [m["id"] for m in (await client.get("/api/models")).json()["models"]]
        assert "demo" in models and "fake-1" in models
        events = await read_events(client, f"/api/chat/stream/{await _start(client, 'fake-1')}")
    assert text_of(events) == "tok0 tok1 tok2 tok3 tok4 "
    assert events[-1].event == "done"


async def test_readyz_shows_the_upstream(served: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        await client.get("/api/models")
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    (upstream,) = ready.json()["upstreams"]
    assert upstream["reachable"] is True and "fake-1" in upstream["models"]


async def test_readyz_stays_ready_with_an_unreachable_upstream(tmp_path: Path) -> None:
    # The demo model still answers: readiness must not take every instance out at once.
    settings = load_settings(
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1", openai_max_retries="0"
    )
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            models = [m["id"] for m in (await client.get("/api/models")).json()["models"]]
            ready = await client.get("/readyz")
    assert models == ["demo"]
    assert ready.status_code == 200
    (upstream,) = ready.json()["upstreams"]
    assert upstream["reachable"] is False
    assert upstream["error"] == "cannot reach the model server"


@pytest.mark.parametrize(
    ("model", "message", "logged"),
    [
        ("fake-500", "the model server answered 500; the server log", "upstream exploded"),
        ("fake-401", "the model server answered 401; the server log", "Incorrect API key"),
        ("fake-midfail", "the model server failed; the server log", "model crashed mid-answer"),
        ("fake-cut", "the model's answer was cut off", None),
    ],
)
async def test_provider_errors_end_the_stream_with_a_readable_error(
    served: ServerThread,
    model: str,
    message: str,
    logged: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        stream_id = await _start(client, model)
        events = await read_events(client, f"/api/chat/stream/{stream_id}")
        assert events[-1].event == "error"
        assert message in events[-1].data["message"]
        # What the upstream said (a 401 quotes the key's end) goes to the log, not to users.
        if logged is not None:
            assert logged not in events[-1].data["message"]
            assert logged in caplog.text
        assert "TAIL" not in events[-1].data["message"]
        if model in ("fake-midfail", "fake-cut"):
            assert text_of(events) == "tok0 tok1 "
        for _ in range(100):
            stored = (await client.get("/api/conversations")).json()["conversations"]
            found = (await client.get(f"/api/conversations/{stored[0]['id']}")).json()
            if found["messages"][-1]["role"] == "assistant":
                break
            await asyncio.sleep(0.02)
        assert found["messages"][-1]["status"] == "error"
        assert message in found["messages"][-1]["error"]
        if model == "fake-cut":  # stored as what it is: a partial answer, not a complete one
            assert found["messages"][-1]["content"] == "tok0 tok1 "


async def test_abort_closes_the_upstream_request(
    served: ServerThread, upstream: FakeOpenAI
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        stream_id = await _start(client, "fake-hang")
        first = await read_events(client, f"/api/chat/stream/{stream_id}", limit=1)
        assert first[0].data == {"text": "tok0 "}
        answer = await client.post(f"/api/chat/stream/{stream_id}/abort")
        assert answer.json() == {"aborted": True, "acknowledged": True, "status": "aborted"}
    record = upstream.requests[-1]
    assert await asyncio.to_thread(record.ended.wait, 5)
    assert record.closed_early and not record.completed


def test_serve_logs_no_credentials_of_the_model_server(
    upstream: FakeOpenAI, tmp_path: Path
) -> None:
    """``serve``'s start line and logs (httpx logs every request URL) hide the password of an
    OPENAI_BASE_URL with credentials, and the 401's key fragment is logged masked by the
    upstream only."""
    secret = "pw-ss-X9"
    base_url = upstream.base_url.replace("http://", f"http://key:{secret}@")
    log = tmp_path / "serve.log"
    server = ServeProcess({"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": KEY}, log).start()
    try:
        for model in ("fake-1", "fake-401"):
            answer = httpx.post(
                f"{server.url}/api/chat", json={"message": "hi", "model": model}, timeout=10
            )
            assert answer.status_code == 202, answer.text
            stream = f"{server.url}/api/chat/stream/{answer.json()['stream_id']}"
            with httpx.stream("GET", stream, timeout=10) as response:
                body = b"".join(response.iter_bytes())
            assert secret.encode() not in body and b"TAIL" not in body
    finally:
        server.stop()
    output = log.read_text()
    assert secret not in output
    assert "chatscale: serving on" in output and "Incorrect API key" in output
    assert "http://key:***@127.0.0.1" in output  # httpx's request log, masked


async def test_system_prompt_temperature_and_max_tokens_reach_the_upstream(
    served: ServerThread, upstream: FakeOpenAI
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        options = {"system": "Answer in French.", "temperature": 0.2, "max_tokens": 7}
        response = await client.post(
            "/api/chat", json={"message": "hi", "model": "fake-1", **options}
        )
        assert response.status_code == 202, response.text
        await read_events(client, f"/api/chat/stream/{response.json()['stream_id']}")
        plain = await _start(client, "fake-1")
        await read_events(client, f"/api/chat/stream/{plain}")
    sent, default = upstream.requests[-2].body, upstream.requests[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "hi"},
    ]
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 7
    # Unset options are not sent: the upstream's own defaults apply.
    assert "temperature" not in default and "max_tokens" not in default
    assert [m["role"] for m in default["messages"]] == ["user"]
