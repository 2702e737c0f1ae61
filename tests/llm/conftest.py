"""Fixtures of the provider tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llm.fake_openai import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server: 5 tokens, 20 ms apart."""
    with FakeOpenAI(tokens=5, delay=0.02) as server:
        yield server
