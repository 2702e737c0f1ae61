"""Which provider serves which model, built from the settings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from chatscale.config import Settings
from chatscale.failures import FailureLog
from chatscale.llm.base import ModelInfo, Provider, ProviderError
from chatscale.llm.chaos import ChaosProvider
from chatscale.llm.demo import DemoProvider
from chatscale.llm.openai_compat import OpenAICompatibleProvider

log = logging.getLogger(__name__)


@runtime_checkable
class CountsTokens(Protocol):
    """A provider that counts the tokens it generated (the chaos model)."""

    def token_counts(self) -> dict[str, int]:
        """Tokens generated so far by this process, by model."""
        ...


class ProviderRegistry:
    """Resolves a model name to its provider; the demo model is always there."""

    def __init__(self, providers: Sequence[Provider], default_model: str) -> None:
        self.providers = list(providers)
        self.default_model = default_model
        self._owner: dict[str, Provider] = {}
        self._failures: dict[str, FailureLog] = {}

    async def models(self) -> list[ModelInfo]:
        """Every model of every provider; a provider that fails is left out and logged."""
        found: list[ModelInfo] = []
        for provider in self.providers:
            failures = self._failures.get(provider.name)
            if failures is None:
                failures = FailureLog(log, f"listing the models of provider {provider.name}")
                self._failures[provider.name] = failures
            try:
                listed = await provider.models()
            except ProviderError as exc:
                failures.failed(exc)
                continue
            failures.succeeded()
            for model in listed:
                self._owner.setdefault(model.id, provider)
                found.append(model)
        return found

    async def resolve(self, model: str | None) -> tuple[str, Provider]:
        """The model to use (``model`` or the default) and its provider.

        Raises :class:`ProviderError` naming the available models when it is unknown.
        """
        name = model or self.default_model
        if name not in self._owner:
            available = [m.id for m in await self.models()]
            if name not in self._owner:
                shown = ", ".join(available) or "none"
                raise ProviderError(f"unknown model {name!r}; available models: {shown}")
        return name, self._owner[name]

    def upstreams(self) -> list[OpenAICompatibleProvider]:
        """The OpenAI-compatible providers (the ones that can be unreachable)."""
        return [p for p in self.providers if isinstance(p, OpenAICompatibleProvider)]

    def token_counts(self) -> dict[str, int]:
        """Tokens generated so far, by model, of the providers that count them."""
        counts: dict[str, int] = {}
        for provider in self.providers:
            if isinstance(provider, CountsTokens):
                for model, count in provider.token_counts().items():
                    counts[model] = counts.get(model, 0) + count
        return counts

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self.providers:
            await provider.aclose()


def build_registry(settings: Settings) -> ProviderRegistry:
    """The demo provider, the chaos test model when CHAOS_MODEL is on, plus an
    OpenAI-compatible one when OPENAI_API_KEY or _BASE_URL is set."""
    providers: list[Provider] = [
        DemoProvider(settings.demo_tokens_per_second, settings.demo_response_tokens)
    ]
    if settings.chaos_model:
        providers.append(
            ChaosProvider(settings.demo_tokens_per_second, settings.demo_response_tokens)
        )
    if settings.openai_api_key is not None or settings.openai_base_url is not None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        providers.append(
            OpenAICompatibleProvider(
                api_key=key,
                base_url=settings.openai_base_url,
                models=settings.openai_models,
                timeout_s=settings.openai_timeout,
                max_retries=settings.openai_max_retries,
                http_client=settings.openai_http_client,
            )
        )
    return ProviderRegistry(providers, settings.default_model)
