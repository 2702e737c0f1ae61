"""Language-model providers: an offline demo model, the chaos test model and any
OpenAI-compatible server."""

from chatscale.llm import _extra  # noqa: F401  (names the extra when one is missing)
from chatscale.llm.base import (
    ChatMessage,
    Chunk,
    CompletionRequest,
    ModelInfo,
    Provider,
    ProviderError,
)
from chatscale.llm.chaos import CHAOS_MODEL, ChaosProvider
from chatscale.llm.demo import DEMO_MODEL, DemoProvider, demo_tokens
from chatscale.llm.openai_compat import CONTINUE_INSTRUCTION, OpenAICompatibleProvider
from chatscale.llm.registry import ProviderRegistry, build_registry

__all__ = [
    "CHAOS_MODEL",
    "CONTINUE_INSTRUCTION",
    "DEMO_MODEL",
    "ChaosProvider",
    "ChatMessage",
    "Chunk",
    "CompletionRequest",
    "DemoProvider",
    "ModelInfo",
    "OpenAICompatibleProvider",
    "Provider",
    "ProviderError",
    "ProviderRegistry",
    "build_registry",
    "demo_tokens",
]
