"""Cross-site request forgery, defence in depth: unsafe requests must come from our origin.

``SameSite=Lax`` already keeps the session cookie off cross-site POSTs; this middleware also
refuses an unsafe request (anything but GET, HEAD, OPTIONS, TRACE) whose ``Origin`` is
neither the server's own origin (the ``Host`` it was reached by) nor in ``ALLOWED_ORIGINS``.
Without ``Origin`` it falls back to ``Sec-Fetch-Site``; a request with neither header
(curl, server-to-server calls, old browsers) passes: only browsers forge on a user's behalf,
and every current browser sends one of the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from chatscale.asgi import ASGIApp, Receive, Scope, Send, send_json
from chatscale.errors import ConfigError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: ``Sec-Fetch-Site`` values of requests a page of ours (or the user, typing) started.
_SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})


def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; ``None`` if ``text``
    is not a plain http(s) origin (a path, credentials, ``null`` or garbage)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (
        scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def parse_allowed_origins(entries: Iterable[str]) -> frozenset[str]:
    """``ALLOWED_ORIGINS`` normalised; :class:`ConfigError` naming a bad entry."""
    allowed = set()
    for entry in entries:
        origin = normalize_origin(entry)
        if origin is None:
            raise ConfigError(
                "ALLOWED_ORIGINS",
                entry,
                "is not an origin",
                "comma-separated http(s)://host[:port] without a path, "
                "e.g. https://chat.example.com",
            )
        allowed.add(origin)
    return frozenset(allowed)


class OriginCheckMiddleware:
    """Refuse unsafe HTTP requests from another origin with a JSON 403.

    ``allowed_origins`` (normalised, see :func:`parse_allowed_origins`) are accepted besides
    the server's own origin. The own origin is the request's ``Host`` with its scheme; an
    ``https`` origin for that host is accepted on a plain-http request too, because a
    TLS-terminating proxy in front hides the scheme.
    """

    def __init__(self, app: ASGIApp, allowed_origins: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.allowed = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            problem = self.problem(scope)
            if problem is not None:
                await send_json(
                    send,
                    403,
                    {"error": f"cross-origin request refused: {problem}"},
                    [(b"cache-control", b"no-store")],
                )
                return
        await self.app(scope, receive, send)

    def problem(self, scope: Scope) -> str | None:
        """Why the request is refused, or ``None`` when it may proceed."""
        return cross_origin_problem(scope, self.allowed)


def cross_origin_problem(scope: Scope, allowed: frozenset[str]) -> str | None:
    """Why an unsafe request must be refused as cross-origin (see the module), or ``None``
    when it may proceed; ``allowed`` are the normalised ``ALLOWED_ORIGINS``."""
    origins: list[str] = []
    sites: list[str] = []
    host = ""
    for name, value in scope.get("headers", []):
        if name == b"origin":
            origins.append(value.decode("latin-1"))
        elif name == b"sec-fetch-site":
            sites.append(value.decode("latin-1").strip().lower())
        elif name == b"host":
            host = value.decode("latin-1")
    if len(origins) > 1:
        return "several Origin headers"
    if origins:
        shown = origins[0][:100]
        origin = normalize_origin(origins[0])
        if origin is None:
            return f"Origin {shown!r} is not an allowed origin"
        if origin in allowed or _is_own(origin, host, scope.get("scheme", "http")):
            return None
        return f"Origin {shown!r} is not this server's origin nor in ALLOWED_ORIGINS"
    if not sites or all(site in _SAME_ORIGIN_SITES for site in sites):
        return None
    return f"Sec-Fetch-Site is {sites[0][:30]!r} and the request carries no Origin"


def _is_own(origin: str, host: str, scheme: str) -> bool:
    if not host:
        return False
    schemes = {"https"} | ({"http"} if scheme in ("http", "ws") else set())
    return any(origin == normalize_origin(f"{s}://{host}") for s in schemes)
