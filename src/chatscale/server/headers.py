"""Security headers on every answer, and ``Cache-Control: no-store`` on the API.

The page loads only its own script and style sheet (no inline code, no other origin), so the
policy needs no ``'unsafe-inline'``; ``connect-src 'self'`` covers its fetch and EventSource
calls. Answers under ``/api/`` are per-session, so no cache (browser or shared) may keep them.
The page's files (``/`` and ``/static/``) are revalidated on every load (``no-cache``; they
carry an ETag), so a browser never mixes modules of two releases after an upgrade.
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_NO_STORE = (b"cache-control", b"no-store")
_REVALIDATE = (b"cache-control", b"no-cache")


#: The headers of an answer to a path under ``/api/``, to the page's files, and to any other
#: path; and the names they replace.
_API = (*SECURITY_HEADERS, _NO_STORE)
_PAGE = (*SECURITY_HEADERS, _REVALIDATE)
_NAMES = frozenset(name for name, _ in _API)
_OTHER_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


def response_headers(path: str) -> tuple[frozenset[bytes], tuple[tuple[bytes, bytes], ...]]:
    """The headers every answer to ``path`` gets: :data:`SECURITY_HEADERS`, ``Cache-Control:
    no-store`` under ``/api/``, ``no-cache`` on the page's files; and the names they replace
    in the application's own headers."""
    if path.startswith("/api/"):
        return _NAMES, _API
    if path == "/" or path.startswith("/static/"):
        return _NAMES, _PAGE
    return _OTHER_NAMES, SECURITY_HEADERS
