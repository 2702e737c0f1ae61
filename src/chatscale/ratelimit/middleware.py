"""Pure ASGI rate-limit middleware: guards chosen by path prefix and method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatscale.asgi import ASGIApp, Receive, Scope, Send
from chatscale.ratelimit.guard import RateGuard
from chatscale.ratelimit.responses import send_refusal


@dataclass(frozen=True)
class Rule:
    """Apply ``guard`` to HTTP requests whose path starts with ``path_prefix``.

    ``methods`` (upper case) narrows it, e.g. ``frozenset({"POST"})`` to count only
    chat starts; ``None`` means every method.
    """

    guard: RateGuard
    path_prefix: str = "/"
    methods: frozenset[str] | None = None

    def matches(self, scope: Scope) -> bool:
        """Whether this rule applies to the request."""
        if not scope.get("path", "").startswith(self.path_prefix):
            return False
        return self.methods is None or scope.get("method", "GET") in self.methods


class RateLimitMiddleware:
    """Refuse requests over their limit with 429 (or 403 while banned) and a JSON body.

    Install it *inside* :class:`~chatscale.sessions.SessionMiddleware` (after it in
    Starlette's ``middleware=[...]`` list) so requests are counted per session user; without
    a session they are counted per client address. Every matching rule is checked, in order;
    the first refusal answers.

    ``rules`` may also be a zero-argument callable, called on each request: for applications
    that build :class:`~chatscale.ratelimit.RateLimits` in their lifespan (it needs the Redis
    connection) after the middleware stack exists. Until it returns rules, nothing is limited.
    """

    def __init__(self, app: ASGIApp, rules: Sequence[Rule] | Callable[[], Sequence[Rule]]) -> None:
        self.app = app
        self._rules = rules if callable(rules) else tuple(rules)

    @property
    def rules(self) -> Sequence[Rule]:
        """The rules in force now."""
        return self._rules() if callable(self._rules) else self._rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for rule in self.rules:
                if not rule.matches(scope):
                    continue
                refusal = await rule.guard.check(scope)
                if refusal is not None:
                    await send_refusal(send, refusal.status, refusal.error, refusal.retry_after)
                    return
        await self.app(scope, receive, send)
