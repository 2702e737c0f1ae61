"""The OpenAI-compatible provider against a local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.llm import (
    CONTINUE_INSTRUCTION,
    ChatMessage,
    Chunk,
    CompletionRequest,
    OpenAICompatibleProvider,
    ProviderError,
    build_registry,
)
from chatscale.llm.openai_compat import AnswerCutOff
from tests.llm.fake_openai import MODELS, FakeOpenAI

#: Every test runs with each HTTP transport the provider offers (OPENAI_HTTP_CLIENT).
CLIENTS = ["aiohttp", "httpx"]


@pytest.fixture(params=CLIENTS, autouse=True)
def http_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The transport of every provider the test makes, directly or from the settings."""
    kind: str = request.param
    monkeypatch.setenv("OPENAI_HTTP_CLIENT", kind)
    return kind


def _provider(
    server: FakeOpenAI | str, models: tuple[str, ...] = (), **options: Any
) -> OpenAICompatibleProvider:
    base_url = server if isinstance(server, str) else server.base_url
    options.setdefault("api_key", "sk-test")
    options.setdefault("max_retries", 0)
    kind = os.environ["OPENAI_HTTP_CLIENT"]
    assert kind in CLIENTS
    return OpenAICompatibleProvider(
        base_url=base_url,
        models=models,
        http_client="aiohttp" if kind == "aiohttp" else "httpx",
        **options,
    )


def _request(model: str = "fake-1", partial: str = "") -> CompletionRequest:
    return CompletionRequest(model, [ChatMessage("user", "hi")], continue_from=partial)


async def _answer(server: FakeOpenAI | str, request: CompletionRequest) -> list[Chunk]:
    """Every chunk a new provider streams for ``request``; the provider is closed after."""
    provider = _provider(server)
    try:
        return [c async for c in provider.stream(request)]
    finally:
        await provider.aclose()


async def test_streams_the_answer(fake_openai: FakeOpenAI) -> None:
    chunks = await _answer(fake_openai, _request())
    assert "".join(c.text for c in chunks) == "tok0 tok1 tok2 tok3 tok4 "
    assert chunks[-1].finish_reason == "stop"
    assert fake_openai.requests[0].body["stream"] is True
    assert fake_openai.requests[0].body["messages"] == [{"role": "user", "content": "hi"}]
    assert fake_openai.requests[0].completed


async def test_a_base_url_with_credentials_streams_the_answer(fake_openai: FakeOpenAI) -> None:
    # aiohttp refuses URL credentials beside the key's Authorization header: such a base
    # URL keeps the SDK's default client, whatever OPENAI_HTTP_CLIENT says.
    base_url = fake_openai.base_url.replace("http://", "http://user:pw@")
    chunks = await _answer(base_url, _request())
    assert "".join(c.text for c in chunks) == "tok0 tok1 tok2 tok3 tok4 "


async def test_tool_calls_other_choices_and_the_finish_reason(fake_openai: FakeOpenAI) -> None:
    chunks = await _answer(fake_openai, _request("fake-tools"))
    assert chunks == [
        Chunk(text="tok0 "),  # the second choice's text is not part of the answer
        Chunk(event="tool", data={"index": 0, "id": "call_1", "name": "f", "arguments": ""}),
        Chunk(event="tool", data={"index": 0, "id": None, "name": None, "arguments": '{"a":1}'}),
        Chunk(finish_reason="tool_calls"),
    ]


async def test_options_are_sent_and_max_tokens_says_length(fake_openai: FakeOpenAI) -> None:
    request = CompletionRequest(
        "fake-1", [ChatMessage("system", "be brief"), ChatMessage("user", "hi")],
        max_tokens=7, temperature=0.5,
    )  # fmt: skip
    chunks = await _answer(fake_openai, request)
    body = fake_openai.requests[0].body
    assert (body["max_tokens"], body["temperature"], body["model"]) == (7, 0.5, "fake-1")
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]


async def test_closing_the_stream_closes_the_upstream_request(fake_openai: FakeOpenAI) -> None:
    provider = _provider(fake_openai)
    try:
        stream = provider.stream(_request("fake-hang"))
        first = await anext(stream)
        assert first.text == "tok0 "
        await stream.aclose()  # type: ignore[attr-defined]
        record = fake_openai.requests[0]
        assert await asyncio.to_thread(record.ended.wait, 5)
        assert record.closed_early and not record.completed
    finally:
        await provider.aclose()


async def test_cancelling_the_consumer_closes_the_upstream_request(
    fake_openai: FakeOpenAI,
) -> None:
    provider = _provider(fake_openai)
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(_request("fake-hang")):
            got_one.set()

    try:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_one.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(fake_openai.requests[0].ended.wait, 5)
        assert fake_openai.requests[0].closed_early
    finally:
        await provider.aclose()


async def test_continuation_sends_the_partial_answer_and_asks_to_continue(
    fake_openai: FakeOpenAI,
) -> None:
    chunks = await _answer(fake_openai, _request(partial="tok0 tok1 "))
    text = "".join(c.text for c in chunks)
    assert text  # what the upstream sent is passed on as the rest of the answer
    assert fake_openai.requests[0].body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "tok0 tok1 "},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]


@pytest.mark.parametrize(
    ("model", "message", "detail"),
    [
        ("fake-500", "the model server answered 500; the server log", "upstream exploded"),
        ("fake-401", "the model server answered 401; the server log", "Incorrect API key"),
        ("fake-midfail", "the model server failed; the server log", "model crashed mid-answer"),
    ],
)
async def test_upstream_errors_become_generic_provider_errors(
    fake_openai: FakeOpenAI,
    model: str,
    message: str,
    detail: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """End users read the kind of failure; the upstream's words (a 401 quotes the key's
    end) go to the log only."""
    provider = _provider(fake_openai)
    try:
        with pytest.raises(ProviderError, match=message) as exc:
            async for _ in provider.stream(_request(model)):
                pass
    finally:
        await provider.aclose()
    assert detail not in str(exc.value) and detail in caplog.text


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("fake-cut", "the model server closed the stream before finishing"),
        ("fake-reset", "the connection to the model server broke"),
    ],
)
async def test_a_stream_ending_without_finish_reason_is_cut_off(
    fake_openai: FakeOpenAI, model: str, reason: str
) -> None:
    provider = _provider(fake_openai)
    chunks: list[Chunk] = []

    async def consume() -> None:
        async for chunk in provider.stream(_request(model)):
            chunks.append(chunk)

    try:
        with pytest.raises(AnswerCutOff, match=f"the model's answer was cut off: {reason}"):
            await consume()
    finally:
        await provider.aclose()
    assert "".join(c.text for c in chunks) == "tok0 tok1 "
    assert all(c.finish_reason is None for c in chunks)  # never a complete answer


async def test_unreachable_server_is_a_provider_error() -> None:
    provider = _provider("http://127.0.0.1:9/v1", api_key=None, timeout_s=2)
    try:
        with pytest.raises(ProviderError, match="cannot reach the model server"):
            async for _ in provider.stream(_request()):
                pass
        with pytest.raises(ProviderError, match="cannot list the upstream's models"):
            await provider.models()
    finally:
        await provider.aclose()


async def test_models_from_upstream_or_configuration(fake_openai: FakeOpenAI) -> None:
    listed = _provider(fake_openai)
    configured = _provider(fake_openai, models=("only-this",))
    try:
        assert [m.id for m in await listed.models()] == sorted(MODELS)
        assert [m.id for m in await configured.models()] == ["only-this"]
    finally:
        await listed.aclose()
        await configured.aclose()


async def test_registry_routes_models_to_their_provider(fake_openai: FakeOpenAI) -> None:
    registry = build_registry(load_settings(openai_base_url=fake_openai.base_url))
    try:
        ids = [m.id for m in await registry.models()]
        assert "demo" in ids and "fake-1" in ids
        name, provider = await registry.resolve("fake-1")
        assert (name, provider.name) == ("fake-1", "openai")
        _, demo = await registry.resolve("demo")
        assert demo.name == "demo"
    finally:
        await registry.aclose()


class _Silent:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: an upstream
    that hangs. Counts the connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self._writers.append(writer)

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def test_openai_timeout_and_retries_come_from_the_settings(fake_openai: FakeOpenAI) -> None:
    # fake-hang sends one token, then nothing: the answer fails after OPENAI_TIMEOUT (one
    # attempt, OPENAI_MAX_RETRIES=0), not after the SDK's default 60 s x 2.
    settings = load_settings(
        openai_base_url=fake_openai.base_url, openai_timeout="0.5", openai_max_retries="0"
    )
    registry = build_registry(settings)
    _, provider = await registry.resolve("fake-hang")
    began = asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(10):
            with pytest.raises(AnswerCutOff, match="stopped sending"):
                async for _ in provider.stream(_request("fake-hang")):
                    pass
    finally:
        await registry.aclose()
    assert asyncio.get_running_loop().time() - began < 3


async def test_an_unreachable_upstreams_model_list_backs_off() -> None:
    silent = _Silent()
    async with silent as base_url:
        provider = _provider(base_url, timeout_s=0.3)
        loop = asyncio.get_running_loop()
        try:
            with pytest.raises(ProviderError, match="did not answer in time"):
                await provider.models()
            assert silent.accepted == 1
            assert provider.state()["reachable"] is False
            began = loop.time()
            for _ in range(5):
                with pytest.raises(ProviderError, match="did not answer in time"):
                    await provider.models()
            # Within the back-off: no new connection, no new wait.
            assert loop.time() - began < 0.1
            assert silent.accepted == 1
            await asyncio.sleep(1.1)  # the first back-off is 1 s
            with pytest.raises(ProviderError):
                await provider.models()
            assert silent.accepted == 2
        finally:
            await provider.aclose()


async def test_state_says_what_is_known_of_the_upstream(fake_openai: FakeOpenAI) -> None:
    provider = _provider(fake_openai)
    try:
        assert provider.state() == {"provider": "openai", "reachable": None, "models": []}
        await provider.models()
        state = provider.state()
        assert state["reachable"] is True and "fake-1" in state["models"]
        assert "error" not in state
    finally:
        await provider.aclose()
