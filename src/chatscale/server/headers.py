"""Security headers on every answer, and ``Cache-Control: no-store`` on the API.

The page loads only its own script and style sheet (no inline code, no other origin), so the
policy needs no ``'unsafe-inline'``; ``connect-src 'self'`` covers its fetch and EventSource
calls. Answers under ``/api/`` are per-session, so no cache (browser or shared) may keep them.
The page's files (``/`` and ``/static/``) are revalidated on every load (``no-cache``; they
carry an ETag), so a browser never mixes modules of two releases after an upgrade.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class SecurityHeadersMiddleware:
    """Pure ASGI middleware adding :data:`SECURITY_HEADERS` (replacing any of the same name)
    to every HTTP answer, ``Cache-Control: no-store`` to those under ``/api/`` and
    ``no-cache`` to the page's files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = SECURITY_HEADERS
        path = scope["path"]
        if path.startswith("/api/"):
            added = (*added, _NO_STORE)
        elif path == "/" or path.startswith("/static/"):
            added = (*added, _REVALIDATE)
        names = {name for name, _ in added}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
                message = {**message, "headers": [*kept, *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
