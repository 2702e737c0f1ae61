"""Prometheus metrics of model answers: time to first token, tokens per second, upstream errors.

Series are labelled by model, but only by the models the settings name (the demo model, the
chaos model when on, OPENAI_MODELS, DEFAULT_MODEL): any other name is counted as
:data:`OTHER_MODEL`, so a client sending made-up names (or an upstream listing hundreds of
models) cannot grow the series without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable

import openai
from prometheus_client import CollectorRegistry, Counter, Histogram

from chatscale.config import Settings
from chatscale.llm import Chunk
from chatscale.llm.chaos import CHAOS_MODEL
from chatscale.llm.demo import DEMO_MODEL
from chatscale.llm.openai_compat import AnswerCutOff, timed_out

#: The model label of every model the settings do not name.
OTHER_MODEL = "other"
#: Every value of the ``kind`` label of ``chatscale_upstream_errors_total``.
ERROR_KINDS = ("timeout", "connection", "rate_limited", "http_4xx", "http_5xx", "cut_off", "other")

_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_TPS_BUCKETS = (1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 100.0, 200.0, 500.0, 1000.0)


def configured_models(settings: Settings) -> frozenset[str]:
    """The model names the settings declare: the only values of the ``model`` label."""
    names = {DEMO_MODEL, settings.default_model, *settings.openai_models}
    if settings.chaos_model:
        names.add(CHAOS_MODEL)
    return frozenset(names)


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of a failed answer (one of :data:`ERROR_KINDS`)."""
    for cause in (exc, exc.__cause__):
        if isinstance(cause, openai.APIConnectionError):
            return "timeout" if timed_out(cause) else "connection"
        if isinstance(cause, openai.APIStatusError):
            if cause.status_code == 429:
                return "rate_limited"
            return "http_5xx" if cause.status_code >= 500 else "http_4xx"
    if isinstance(exc, AnswerCutOff):
        return "cut_off"
    return "other"


class GenerationMetrics:
    """Histograms and counters of the answers this instance produces."""

    def __init__(self, registry: CollectorRegistry, models: Iterable[str]) -> None:
        self.models = frozenset(models)
        self.first_token = Histogram(
            "chatscale_llm_time_to_first_token_seconds",
            "from asking the model to its first text, by model",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens_per_second = Histogram(
            "chatscale_llm_tokens_per_second",
            "text chunks (tokens) per second after the first, of answers that finished, by model",
            ["model"],
            buckets=_TPS_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "chatscale_upstream_errors",
            "answers the model failed, by model and kind",
            ["model", "kind"],
            registry=registry,
        )

    def label(self, model: str) -> str:
        """``model`` if the settings name it, else :data:`OTHER_MODEL`."""
        return model if model in self.models else OTHER_MODEL

    async def measure(self, model: str, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """Pass ``chunks`` through, timing them; closing this closes ``chunks``."""
        label = self.label(model)
        asked = time.monotonic()
        first: float | None = None
        tokens = 0
        try:
            async for chunk in chunks:
                if chunk.text:
                    tokens += 1
                    if first is None:
                        first = time.monotonic()
                        self.first_token.labels(label).observe(first - asked)
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            self.errors.labels(label, error_kind(exc)).inc()
            raise
        finally:
            # An abort closes this iterator: the provider's must close too (its upstream
            # request), now rather than when it is collected.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        if first is not None and tokens > 1:
            elapsed = time.monotonic() - first
            if elapsed > 0:
                self.tokens_per_second.labels(label).observe((tokens - 1) / elapsed)
