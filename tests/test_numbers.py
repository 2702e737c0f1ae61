"""parse_whole: the one rule for whole numbers read from outside text."""

from __future__ import annotations

import pytest

from chatscale.numbers import parse_whole


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("7", 7),
        ("007", 7),
        ("999999999999999999", 999_999_999_999_999_999),
        (b"42", 42),
    ],
)
def test_ascii_digits_are_read(text: str | bytes, expected: int) -> None:
    assert parse_whole(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1.0",
        "1_000",
        "0x10",
        "\u00b9",  # superscript one: isdigit() is true, int() raises
        "\u0663",  # Arabic-Indic three: int() reads it as 3
        "\uff11",  # fullwidth one
        "1\n",
        "1" * 19,  # over the default 18 digits
        b"\xd9\xa3",
        b"\xff",
    ],
)
def test_anything_else_is_none(text: str | bytes) -> None:
    assert parse_whole(text) is None


def test_a_longer_bound_reads_numbers_int_would_refuse_beyond_it() -> None:
    assert parse_whole("9" * 1000, max_digits=1000) == 10**1000 - 1
    # int() refuses more than 4,300 digits; the bound keeps such text away from it.
    assert parse_whole("9" * 5000, max_digits=1000) is None
