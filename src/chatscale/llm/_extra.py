"""Imported first by :mod:`chatscale.llm`: its OpenAI-compatible provider needs ``openai``."""

from chatscale.extras import require_extra

require_extra("chatscale.llm", "openai")
