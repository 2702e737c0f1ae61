"""One rule for reading a whole number out of text from outside (a header, a query, a URI,
an environment variable, a command-line option)."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")


def parse_whole(text: str | bytes, max_digits: int = 18) -> int | None:
    """``text`` as a whole number when it is 1 to ``max_digits`` ASCII digits, else None.

    ``str.isdigit()`` is not this test: it is true of ``"¹"`` (which ``int()`` refuses, a 500
    found by schemathesis) and of ``"٣"`` (which ``int()`` reads as 3), and ``int()`` refuses
    more than 4,300 digits. Leading zeros are accepted; callers that forbid them say so.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if len(text) > max_digits or not _DIGITS.fullmatch(text):
        return None
    return int(text)
