"""The offline demo model: deterministic, paced, continuable."""

from __future__ import annotations

import time

import pytest

from chatscale.config import load_settings
from chatscale.llm import (
    DEMO_MODEL,
    ChatMessage,
    CompletionRequest,
    DemoProvider,
    ProviderError,
    build_registry,
)


def _request(text: str = "hello", partial: str = "") -> CompletionRequest:
    return CompletionRequest(DEMO_MODEL, [ChatMessage("user", text)], continue_from=partial)


async def _collect(provider: DemoProvider, request: CompletionRequest) -> tuple[str, str | None]:
    text, finish = [], None
    async for chunk in provider.stream(request):
        text.append(chunk.text)
        finish = chunk.finish_reason or finish
    return "".join(text), finish


async def test_same_prompt_same_answer_and_length() -> None:
    provider = DemoProvider(tokens_per_second=10_000, tokens=30)
    first, finish = await _collect(provider, _request())
    second, _ = await _collect(provider, _request())
    other, _ = await _collect(provider, _request("something else"))
    assert first == second
    assert first != other
    assert len(first.split()) == 30
    assert finish == "stop"


async def test_paced_at_the_configured_speed() -> None:
    provider = DemoProvider(tokens_per_second=100, tokens=20)
    start = time.monotonic()
    await _collect(provider, _request())
    elapsed = time.monotonic() - start
    assert 0.18 <= elapsed < 0.6


@pytest.mark.parametrize("cut", [0, 1, 7, 8, 13, 29, 30])
async def test_continues_from_any_partial_answer(cut: int) -> None:
    provider = DemoProvider(tokens_per_second=10_000, tokens=30)
    whole, _ = await _collect(provider, _request())
    # Cut inside a token too (cut characters into the first ``cut`` tokens' text).
    partial = whole[: len("".join(whole.split(" ")[:cut])) + cut - 2] if cut else ""
    rest, finish = await _collect(provider, _request(partial=partial))
    assert partial + rest == whole
    assert finish == "stop"


async def test_foreign_partial_answer_is_refused() -> None:
    provider = DemoProvider(tokens_per_second=10_000, tokens=5)
    with pytest.raises(ProviderError, match="not one the demo model wrote"):
        await _collect(provider, _request(partial="this was never written"))


async def test_unknown_model_and_registry() -> None:
    registry = build_registry(
        load_settings(demo_tokens_per_second=5, demo_response_tokens=3, default_model="demo")
    )
    models = await registry.models()
    assert [m.id for m in models] == ["demo"]
    assert models[0].demo and "Demo" in models[0].label
    name, provider = await registry.resolve(None)
    assert name == "demo" and provider.name == "demo"
    with pytest.raises(ProviderError, match="unknown model 'gpt-x'; available models: demo"):
        await registry.resolve("gpt-x")
    await registry.aclose()


def test_bad_demo_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        DemoProvider(tokens_per_second=0, tokens=1)
