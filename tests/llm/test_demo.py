"""The offline demo model: deterministic, paced, continuable."""

from __future__ import annotations

import asyncio
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
from chatscale.llm.demo import PACE_QUANTUM_S, Pacer


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


async def test_the_pacer_wakes_every_waiter_of_a_quantum_never_early() -> None:
    pacer = Pacer()
    loop = asyncio.get_running_loop()
    now = loop.time()
    instants = [now + 0.01 + i * 0.0002 for i in range(20)]  # 20 waiters in ~4 quanta
    woke: list[float] = []

    async def wait(when: float) -> None:
        await pacer.until(when)
        woke.append(loop.time() - when)

    cancelled = asyncio.ensure_future(pacer.until(now + 0.01))
    cancelled.cancel()  # an aborted stream: the others of its quantum still wake
    async with asyncio.timeout(2):
        await asyncio.gather(*(wait(t) for t in instants))
    assert len(woke) == 20
    # loop.time() can lag the timer by its own resolution, never by a whole quantum more.
    assert min(woke) > -PACE_QUANTUM_S
    assert max(woke) < 0.05


def test_the_pacer_follows_the_running_loop() -> None:
    provider = DemoProvider(tokens_per_second=500, tokens=5)
    for _ in range(2):  # one provider, two loops in turn (as tests and restarts do)
        text, finish = asyncio.run(_collect(provider, _request()))
        assert text == "".join(provider.full_answer(_request())) and finish == "stop"
