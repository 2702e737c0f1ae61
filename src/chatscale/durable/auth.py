"""Bearer tokens for the protocol's routes: read tokens may GET and HEAD, write tokens may
also PUT, POST and DELETE. ``DURABLE_STREAMS_AUTH=none`` opens every route (loopback tests)."""

from __future__ import annotations

import hmac

from chatscale.durable.errors import ProtocolError
from chatscale.durable.headers import Headers

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="durable-streams"'}


def bearer_token(headers: Headers) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or ``None`` without one."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class BearerAuth:
    """Checks ``Authorization: Bearer <token>`` against the configured tokens."""

    def __init__(
        self, read_tokens: tuple[str, ...], write_tokens: tuple[str, ...], *, open_: bool
    ) -> None:
        self.open = open_
        self._read = tuple(t.encode() for t in read_tokens)
        self._write = tuple(t.encode() for t in write_tokens)

    def check(self, headers: Headers, *, write: bool) -> None:
        """Raise 401 without a known token, 403 for a read token on a write."""
        if self.open:
            return
        token = bearer_token(headers)
        if token is None:
            raise ProtocolError(
                401, "a bearer token is required (Authorization: Bearer ...)", _CHALLENGE
            )
        given = token.encode()
        # Compare against every token so the time taken does not tell which matched.
        can_write = any([hmac.compare_digest(given, t) for t in self._write])
        can_read = can_write or any([hmac.compare_digest(given, t) for t in self._read])
        if not can_read:
            raise ProtocolError(401, "the bearer token is not valid", _CHALLENGE)
        if write and not can_write:
            raise ProtocolError(403, "this token may only read (GET, HEAD)")
