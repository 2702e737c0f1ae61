"""Offsets: their text and header forms, and their order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatscale.durable.offsets import Offset, parse_offset

_PART = st.integers(min_value=0, max_value=10**16 - 1)


@given(_PART, _PART, _PART, _PART)
def test_an_offset_reads_back_and_sorts_as_its_text(a: int, b: int, c: int, d: int) -> None:
    first, second = Offset(a, b), Offset(c, d)
    assert parse_offset(str(first)) == first
    assert first.raw() == str(first).encode()
    assert (first < second) == (str(first) < str(second))
