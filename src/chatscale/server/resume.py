"""Resume tokens: proof that a client started a stream, for when its session is gone.

``POST /api/chat`` answers a token beside the stream id. The stream routes accept it
(``?token=`` or the ``X-Resume-Token`` header) instead of the session, so a client whose
session was lost (Redis emptied, the session expired) still reaches the answer it started.

Form: ``v1.<payload>.<signature>``, both unpadded base64url. The payload is compact JSON
``{"s": stream id, "o": owner, "e": expiry (epoch seconds)}``; the signature is HMAC-SHA256
over ``b"chatscale.resume.v1." + payload`` with a key derived from the session signing key
under a label of its own (so a token can never pass for a session cookie or the reverse).
Tokens signed with ``SESSION_SECRET_PREVIOUS`` are accepted during a secret rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from chatscale.sessions.manager import SessionConfig

#: How long a token is accepted. Longer than any answer runs plus STREAM_FINISHED_TTL; the
#: stream itself still expires on its own schedule.
TOKEN_TTL_S = 24 * 3600
#: Longest token looked at (a real one is about 150 characters).
MAX_TOKEN_CHARS = 1024
_VERSION = "v1"
_CONTEXT = b"chatscale.resume.v1."
_KEY_LABEL = b"chatscale/resume-token/v1"


class BadToken(Exception):
    """A token that does not prove anything; the message says why (safe to show)."""


@dataclass(frozen=True)
class ResumeTokens:
    """Issues and verifies tokens with ``key`` (and accepts ``previous_keys``)."""

    key: bytes
    previous_keys: tuple[bytes, ...] = ()
    ttl_s: int = TOKEN_TTL_S

    @classmethod
    def for_sessions(cls, config: SessionConfig) -> ResumeTokens:
        """Tokens keyed from the session configuration (one secret to manage and rotate)."""
        return cls(
            key=_derive(config.signing_key),
            previous_keys=tuple(_derive(k) for k in config.previous_keys),
        )

    def issue(self, stream_id: str, owner: str, *, now: float | None = None) -> str:
        """A token for ``owner``'s stream ``stream_id``, valid ``ttl_s`` from ``now``."""
        expires = int(now if now is not None else time.time()) + self.ttl_s
        payload = _b64(
            json.dumps({"s": stream_id, "o": owner, "e": expires}, separators=(",", ":")).encode()
        )
        return f"{_VERSION}.{payload}.{_b64(_mac(self.key, payload))}"

    def verify(self, token: str, stream_id: str) -> str:
        """The owner the token names for ``stream_id``; :class:`BadToken` otherwise."""
        parts = token.split(".") if len(token) <= MAX_TOKEN_CHARS else []
        if len(parts) != 3 or parts[0] != _VERSION:
            raise BadToken("malformed resume token")
        _, payload, signature = parts
        raw_sig = _unb64(signature)
        if raw_sig is None or not _signed_by(raw_sig, payload, (self.key, *self.previous_keys)):
            raise BadToken("invalid resume token")
        try:
            claims = json.loads(_unb64(payload) or b"")
        except ValueError:
            raise BadToken("malformed resume token") from None
        if not isinstance(claims, dict):
            raise BadToken("malformed resume token")
        owner, expires = claims.get("o"), claims.get("e")
        if not isinstance(owner, str) or not isinstance(expires, int):
            raise BadToken("malformed resume token")
        if claims.get("s") != stream_id:
            raise BadToken("this resume token is for another stream")
        if expires <= time.time():
            raise BadToken("resume token expired")
        return owner


def _derive(signing_key: bytes) -> bytes:
    return hmac.new(signing_key, _KEY_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, _CONTEXT + payload.encode("ascii"), hashlib.sha256).digest()


def _signed_by(signature: bytes, payload: str, keys: Sequence[bytes]) -> bool:
    if not payload.isascii():
        return False
    # Every key is tried (no early exit), so timing does not tell which one matched.
    matches = [hmac.compare_digest(signature, _mac(key, payload)) for key in keys]
    return any(matches)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    if not text.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Canonical form only: several base64 strings decode to the same bytes.
    return raw if _b64(raw) == text else None
