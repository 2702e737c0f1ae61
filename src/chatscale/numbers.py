"""One rule for reading a whole number out of text from outside (a header, a query, a URI,
an environment variable, a command-line option)."""

from __future__ import annotations


def parse_whole(text: str | bytes, max_digits: int = 18) -> int | None:
    """``text`` as a whole number when it is 1 to ``max_digits`` ASCII digits, else None.

    ``str.isdigit()`` alone is not this test: it is true of ``"¹"`` (which ``int()``
    refuses, a 500 found by schemathesis) and of ``"٣"`` (which ``int()`` reads as 3), and
    ``int()`` refuses more than 4,300 digits. Leading zeros are accepted; callers that
    forbid them say so.
    """
    # bytes.isdigit() knows ASCII digits only; a str must be ASCII first. (Cheaper than a
    # regular expression: the body bound reads every request's Content-Length with it.)
    if not 0 < len(text) <= max_digits or not text.isdigit():
        return None
    if isinstance(text, str) and not text.isascii():
        return None
    return int(text)
