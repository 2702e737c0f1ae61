"""A test model whose text is random on every call, for the fault checker (``bench/chaos.py``).

The demo model writes the same words on every instance, so a takeover that mixes two
producers' output, or renumbers a few events, still yields the expected text and goes
unnoticed. The chaos model draws every call's words from ``os.urandom``: two producers of one
answer (the original and a continuation after a takeover, or a stale producer still running)
never write the same text, so any mix of their events shows as a divergence between what a
client received, the final event, the status and the stored answer.

It continues a partial answer (``CompletionRequest.continue_from``) with *new* random words
up to the configured length, and counts every token it generated, so the checker can compare
the tokens the model produced with the tokens that ended up in answers (the waste of
takeovers). Enabled only by ``CHAOS_MODEL=true``; speed and length are the demo model's
settings (``DEMO_TOKENS_PER_SECOND``, ``DEMO_RESPONSE_TOKENS``).
"""

from __future__ import annotations

import asyncio
import os
import random
import string
import time
from collections.abc import AsyncIterator

from chatscale.llm.base import Chunk, CompletionRequest, ModelInfo, ProviderError

CHAOS_MODEL = "chaos"

_LETTERS = string.ascii_lowercase


def chaos_token(rng: random.Random) -> str:
    """One random word of 3 to 8 lowercase letters followed by a space."""
    return "".join(rng.choices(_LETTERS, k=rng.randint(3, 8))) + " "


def tokens_in(text: str) -> int:
    """How many whole chaos tokens ``text`` holds (every token ends with a space)."""
    return text.count(" ")


class ChaosProvider:
    """The ``chaos`` model: ``tokens`` random tokens per answer at ``tokens_per_second``."""

    name = "chaos"

    def __init__(self, tokens_per_second: float, tokens: int) -> None:
        if tokens_per_second <= 0 or tokens < 1:
            raise ValueError("the chaos model needs a positive speed and length")
        self.tokens_per_second = tokens_per_second
        self.tokens = tokens
        self.generated = 0
        self.attempts = 0

    async def models(self) -> list[ModelInfo]:
        """One model, labelled as a test model."""
        return [
            ModelInfo(
                id=CHAOS_MODEL,
                provider=self.name,
                label=f"Chaos test model (random text, {self.tokens_per_second:g} tokens/s)",
                demo=True,
            )
        ]

    def token_counts(self) -> dict[str, int]:
        """Tokens generated so far by this process, by model (``/metrics``)."""
        return {CHAOS_MODEL: self.generated}

    def _length(self, request: CompletionRequest) -> int:
        if request.max_tokens is None:
            return self.tokens
        return min(self.tokens, request.max_tokens)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        """Random tokens up to the answer's length (the rest of it when continuing), paced."""
        if request.model != CHAOS_MODEL:
            raise ProviderError(f"the chaos provider has no model {request.model!r}")
        self.attempts += 1
        rng = random.Random(os.urandom(16) + self.attempts.to_bytes(8, "big"))
        remaining = max(0, self._length(request) - tokens_in(request.continue_from))
        interval = 1.0 / self.tokens_per_second
        began = time.monotonic()
        for n in range(1, remaining + 1):
            delay = began + n * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.generated += 1
            yield Chunk(text=chaos_token(rng))
        yield Chunk(finish_reason="stop")

    async def aclose(self) -> None:
        """Nothing to release."""
