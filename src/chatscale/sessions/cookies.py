"""Session ids, their signed cookie form, and the hash they are stored under.

Cookie value: ``<id>.<signature>``, both unpadded base64url of 32 bytes (43 characters each):

* ``id`` is 256 random bits from :mod:`secrets`;
* ``signature`` is HMAC-SHA256 over ``b"chatscale.session.v1." + id`` with a key derived from
  ``SESSION_SECRET`` (so the raw secret never signs anything directly and other uses of the
  same secret cannot produce valid cookies).

The store never sees the id: it keeps the session under SHA-256 of the id's bytes, so a dump
of the keyspace gives nothing that can be turned back into a cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

ID_BYTES = 32
_ENCODED_LEN = 43  # unpadded base64url of 32 bytes
_CONTEXT = b"chatscale.session.v1."
_KEY_LABEL = b"chatscale/session-cookie/v1"


def derive_key(secret: bytes) -> bytes:
    """The cookie-signing key for ``secret`` (a fixed-label HMAC, so keys are per purpose)."""
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def new_session_id() -> str:
    """A fresh session id: 256 bits from the OS's CSPRNG, base64url."""
    return _b64(secrets.token_bytes(ID_BYTES))


def hash_id(session_id: str) -> str:
    """The storage name of a session: hex SHA-256 of the id (never the id itself)."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def sign(session_id: str, key: bytes) -> str:
    """The cookie value carrying ``session_id``."""
    return f"{session_id}.{_b64(_mac(session_id, key))}"


def unsign(value: str, key: bytes) -> str | None:
    """The session id in a cookie value, or ``None`` when the value is malformed or forged."""
    if len(value) != 2 * _ENCODED_LEN + 1 or value[_ENCODED_LEN] != ".":
        return None
    session_id, signature = value[:_ENCODED_LEN], value[_ENCODED_LEN + 1 :]
    raw_id, raw_sig = _unb64(session_id), _unb64(signature)
    if raw_id is None or raw_sig is None or len(raw_id) != ID_BYTES:
        return None
    # Canonical form only, for the signature too: several base64 strings decode to the same
    # bytes (the unused low bits of the last character; "+" and "/" for "-" and "_").
    if _b64(raw_id) != session_id or _b64(raw_sig) != signature:
        return None
    if not hmac.compare_digest(raw_sig, _mac(session_id, key)):
        return None
    return session_id


def _mac(session_id: str, key: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + session_id.encode("ascii"), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    if not text.isascii():
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def read_cookie_values(headers: list[tuple[bytes, bytes]], name: str) -> list[str]:
    """Every value of cookie ``name`` in the request's ``Cookie`` headers, in order.

    A browser can send several cookies of one name (different paths or domains); the caller
    tries each until one verifies.
    """
    found: list[str] = []
    for header, raw in headers:
        if header.lower() != b"cookie":
            continue
        text = raw.decode("latin-1")
        for part in text.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key.strip() == name:
                found.append(value.strip().strip('"'))
    return found


def set_cookie_header(
    name: str, value: str, *, max_age: int, secure: bool, path: str = "/"
) -> tuple[bytes, bytes]:
    """A ``Set-Cookie`` header for the session cookie (HttpOnly, SameSite=Lax)."""
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return b"set-cookie", "; ".join(parts).encode("latin-1")


def clear_cookie_header(name: str, *, secure: bool, path: str = "/") -> tuple[bytes, bytes]:
    """A ``Set-Cookie`` header that removes the session cookie from the browser."""
    parts = [
        f"{name}=",
        f"Path={path}",
        "Max-Age=0",
        "Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if secure:
        parts.append("Secure")
    return b"set-cookie", "; ".join(parts).encode("latin-1")
