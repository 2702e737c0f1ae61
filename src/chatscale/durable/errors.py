"""The one error type of the protocol layer: an HTTP status, a message and extra headers."""

from __future__ import annotations


class ProtocolError(Exception):
    """A refused request: ``status`` (4xx), a message naming what was wrong, and the headers
    the protocol asks for with that status (``Stream-Next-Offset``, ``Producer-Epoch``...)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
