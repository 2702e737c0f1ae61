"""One rate limit applied to requests: ban check, hit, violation counting, refusal.

Use it three ways: through :class:`~chatscale.ratelimit.RateLimitMiddleware` (by path),
as a decorator on a Starlette endpoint (:func:`rate_limited`), or as a FastAPI dependency
(``Depends(guard)``, with :func:`refusal_exception_handler` registered for
:class:`RateLimitExceeded`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatscale.ratelimit.bans import BanPolicy
from chatscale.ratelimit.concurrency import ConcurrencyLimitExceeded
from chatscale.ratelimit.identity import TrustedProxies, identify
from chatscale.ratelimit.limiter import RateLimiter
from chatscale.ratelimit.responses import BANNED, RATE_LIMITED, refusal_body


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: HTTP status, message and whole seconds to wait."""

    status: int
    error: str
    retry_after: int


def banned(seconds: int) -> Refusal:
    """The refusal for a banned identity."""
    return Refusal(BANNED, "temporarily banned after too many violations", seconds)


def concurrency_refusal(exc: ConcurrencyLimitExceeded) -> Refusal:
    """The 429 refusal for a generation refused by the concurrency limit."""
    return Refusal(
        RATE_LIMITED,
        f"too many generations running: {exc.running} of {exc.limit} allowed",
        exc.retry_after,
    )


class RateGuard:
    """Checks requests against one :class:`RateLimiter`, counting violations toward bans."""

    def __init__(
        self,
        limiter: RateLimiter,
        bans: BanPolicy,
        trusted: TrustedProxies,
        *,
        anonymous_by_ip: bool = False,
    ) -> None:
        self.limiter = limiter
        self.bans = bans
        self.trusted = trusted
        self.anonymous_by_ip = anonymous_by_ip

    def identity(self, scope: Any) -> str:
        """What ``scope``'s request is counted against (``user:...`` or ``ip:...``)."""
        return str(identify(scope, self.trusted, anonymous_by_ip=self.anonymous_by_ip))

    async def check(self, scope: Any) -> Refusal | None:
        """``None`` when the request may proceed (and is counted), else the refusal."""
        identity = self.identity(scope)
        if self.bans.local and self.limiter.local:
            # Nothing to overlap: two tasks and a gathering future would cost more than
            # both checks (they never wait on anything).
            left = await self.bans.ban_left(identity)
            decision = await self.limiter.hit(identity)
        else:
            # Both round trips at once: a banned identity's hit is counted too, which
            # changes nothing for it (it is refused either way) and saves a round trip.
            left, decision = await asyncio.gather(
                self.bans.ban_left(identity), self.limiter.hit(identity)
            )
        if left:
            return banned(left)
        if decision.allowed:
            return None
        violation = await self.bans.violation(identity)
        if violation.banned_for:
            return banned(violation.banned_for)
        return Refusal(RATE_LIMITED, f"rate limit exceeded: {decision.limit}", decision.retry_after)

    async def __call__(self, request: Request) -> None:
        """FastAPI dependency form: raise :class:`RateLimitExceeded` on refusal."""
        refusal = await self.check(request.scope)
        if refusal is not None:
            raise RateLimitExceeded(refusal)


class RateLimitExceeded(HTTPException):
    """Raised by the dependency form; render it with :func:`refusal_exception_handler`."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(
            refusal.status, refusal.error, headers={"Retry-After": str(refusal.retry_after)}
        )
        self.refusal = refusal


def refusal_response(refusal: Refusal) -> Response:
    """The JSON response for ``refusal`` (``Retry-After`` header and body field)."""
    return JSONResponse(
        refusal_body(refusal.error, refusal.retry_after),
        status_code=refusal.status,
        headers={"Retry-After": str(refusal.retry_after), "Cache-Control": "no-store"},
    )


async def refusal_exception_handler(request: Request, exc: Exception) -> Response:
    """Exception handler for :class:`RateLimitExceeded` (Starlette and FastAPI)."""
    if not isinstance(exc, RateLimitExceeded):
        raise exc
    return refusal_response(exc.refusal)


Endpoint = Callable[[Request], Awaitable[Response]]


def rate_limited(guard: RateGuard) -> Callable[[Endpoint], Endpoint]:
    """Decorate a Starlette endpoint ``async def f(request) -> Response`` with ``guard``."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            refusal = await guard.check(request.scope)
            if refusal is not None:
                return refusal_response(refusal)
            return await endpoint(request)

        return guarded

    return decorate
