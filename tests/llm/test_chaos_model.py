"""The chaos test model: random on every call, continuable, counted, opt-in."""

from __future__ import annotations

from chatscale.config import load_settings
from chatscale.llm import CHAOS_MODEL, ChaosProvider, ChatMessage, CompletionRequest, build_registry
from chatscale.llm.chaos import tokens_in


def _request(partial: str = "") -> CompletionRequest:
    return CompletionRequest(CHAOS_MODEL, [ChatMessage("user", "hi")], continue_from=partial)


async def _collect(provider: ChaosProvider, request: CompletionRequest) -> str:
    return "".join([chunk.text async for chunk in provider.stream(request)])


async def test_every_call_writes_other_words_and_counts_them() -> None:
    provider = ChaosProvider(tokens_per_second=10_000, tokens=20)
    first = await _collect(provider, _request())
    second = await _collect(provider, _request())
    assert first != second
    assert tokens_in(first) == tokens_in(second) == 20
    assert provider.token_counts() == {CHAOS_MODEL: 40}


async def test_continuation_writes_only_the_rest_with_new_words() -> None:
    provider = ChaosProvider(tokens_per_second=10_000, tokens=20)
    whole = await _collect(provider, _request())
    head = " ".join(whole.split()[:7]) + " "
    rest = await _collect(provider, _request(head))
    assert tokens_in(rest) == 13
    assert not whole.startswith(head + rest)
    assert provider.generated == 33


async def test_only_with_chaos_model_on() -> None:
    off = build_registry(load_settings())
    on = build_registry(load_settings(chaos_model="true"))
    assert CHAOS_MODEL not in {m.id for m in await off.models()}
    assert CHAOS_MODEL in {m.id for m in await on.models()}
    assert on.token_counts() == {CHAOS_MODEL: 0}
    assert off.token_counts() == {}
