"""An offline model: deterministic text at a configurable speed, for demos and load tests.

The answer is a pure function of the conversation, so an instance that takes over a job
after its producer died continues the very same text from where the partial answer stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator

from chatscale.llm.base import Chunk, CompletionRequest, ModelInfo, ProviderError

DEMO_MODEL = "demo"

_TEXT = (
    "scaling chat backends means every instance can serve any request while the answer "
    "keeps streaming from wherever it is generated so a reconnecting client sees each "
    "token exactly once redis holds the log the lease and the fan out channel and memory "
    "serves a single process without any of that machinery the demo model writes this "
    "deterministic text at a steady pace to exercise resumable streams load balancers "
    "rolling restarts and takeovers"
)
_WORDS = tuple(_TEXT.split())


def demo_tokens(seed_text: str, count: int) -> list[str]:
    """The ``count`` tokens the demo model answers to ``seed_text`` (each ends in a space)."""
    digest = hashlib.sha256(seed_text.encode("utf-8", "surrogatepass")).digest()
    state = int.from_bytes(digest[:8], "big") or 1
    tokens: list[str] = []
    for index in range(count):
        # xorshift64: cheap, deterministic and the same on every instance and version.
        state ^= (state << 13) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 7
        state ^= (state << 17) & 0xFFFFFFFFFFFFFFFF
        word = _WORDS[state % len(_WORDS)]
        tokens.append(f"{word}{'.' if index % 12 == 11 else ''} ")
    return tokens


#: The demo streams due within the same millisecond wake together, on one timer.
PACE_QUANTUM_S = 0.001


class Pacer:
    """Wakes waiters at their instant (rounded up to :data:`PACE_QUANTUM_S`), with one timer
    per quantum shared by every stream due in it instead of one per token: ``asyncio.sleep``
    per token was the demo model's largest cost per delivered token."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due: dict[int, list[asyncio.Future[None]]] = {}

    def until(self, when: float) -> asyncio.Future[None]:
        """A future done at ``when`` (``loop.time()``), or at most a quantum later."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Another loop (tests run one per test): its clock and timers are its own.
            self._loop, self._due = loop, {}
        slot = math.ceil(when / PACE_QUANTUM_S)
        waiter: asyncio.Future[None] = loop.create_future()
        waiters = self._due.get(slot)
        if waiters is None:
            waiters = self._due[slot] = []
            loop.call_at(slot * PACE_QUANTUM_S, self._wake, slot)
        waiters.append(waiter)
        return waiter

    def _wake(self, slot: int) -> None:
        for waiter in self._due.pop(slot, ()):
            if not waiter.done():  # a cancelled stream (an abort) cancelled its own
                waiter.set_result(None)


class DemoProvider:
    """The ``demo`` model: ``tokens`` tokens of deterministic text at ``tokens_per_second``."""

    name = "demo"

    def __init__(self, tokens_per_second: float, tokens: int) -> None:
        if tokens_per_second <= 0 or tokens < 1:
            raise ValueError("the demo model needs a positive speed and length")
        self.tokens_per_second = tokens_per_second
        self.tokens = tokens
        self._pacer = Pacer()

    async def models(self) -> list[ModelInfo]:
        """One model, labelled as a demo in the UI."""
        return [
            ModelInfo(
                id=DEMO_MODEL,
                provider=self.name,
                label=f"Demo (offline, {self.tokens_per_second:g} tokens/s)",
                demo=True,
            )
        ]

    def full_answer(self, request: CompletionRequest) -> list[str]:
        """Every token of the answer to ``request`` (without continuation).

        The text depends on the conversation (its length and last user message), not on a
        system prompt or the temperature, which the demo ignores; ``max_tokens`` cuts it.
        """
        said = [m for m in request.messages if m.role != "system"]
        last_user = next((m.content for m in reversed(said) if m.role == "user"), "")
        return demo_tokens(f"{len(said)}\x00{last_user}", self._length(request))

    def _length(self, request: CompletionRequest) -> int:
        return self.tokens if request.max_tokens is None else min(self.tokens, request.max_tokens)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        """Yield the answer token by token, on a fixed schedule (no drift over long answers)."""
        if request.model != DEMO_MODEL:
            raise ProviderError(f"the demo provider has no model {request.model!r}")
        tokens = self.full_answer(request)
        start, head = 0, ""
        if request.continue_from:
            start, head = _resume_point(tokens, request.continue_from)
        if head:
            yield Chunk(text=head)
            start += 1
        interval = 1.0 / self.tokens_per_second
        loop = asyncio.get_running_loop()
        began = loop.time()
        for n, token in enumerate(tokens[start:], 1):
            due = began + n * interval
            if due > loop.time():
                await self._pacer.until(due)
            yield Chunk(text=token)
        # As an upstream says it: "length" when max_tokens cut the answer short.
        yield Chunk(finish_reason="length" if self._length(request) < self.tokens else "stop")

    async def aclose(self) -> None:
        """Nothing to release."""


def _resume_point(tokens: list[str], partial: str) -> tuple[int, str]:
    """Where ``partial`` stops in ``tokens``: (index of the next token, rest of a cut token)."""
    position = 0
    for index, token in enumerate(tokens):
        if partial.startswith(token, position):
            position += len(token)
            continue
        rest = partial[position:]
        if not rest:
            return index, ""
        if token.startswith(rest):
            return index, token[len(rest) :]
        break
    else:
        if position == len(partial):
            return len(tokens), ""
    raise ProviderError("the partial answer is not one the demo model wrote")
