"""``DURABLE_STREAMS_WRITE_RATE_LIMIT``: how many writes (``PUT``, ``POST``, ``DELETE``) one
client may make, counted in the server's rate-limit storage (Redis when ``USE_REDIS`` is on,
so the limit holds across instances) with the ``limits`` library's moving window.

A client is its bearer token (as a digest: no token is written to Redis), or its address
when the routes are open (``DURABLE_STREAMS_AUTH=none``; behind ``TRUSTED_PROXIES``, the
address they forward). Reads are not limited: a live read waits instead of polling.
"""

from __future__ import annotations

import hashlib
from typing import Any

from limits.aio.storage import Storage

from chatscale.durable.auth import bearer_token
from chatscale.durable.errors import ProtocolError
from chatscale.durable.headers import Headers
from chatscale.ratelimit.identity import TrustedProxies, client_address
from chatscale.ratelimit.limiter import RateLimiter, parse_limits

SETTING = "DURABLE_STREAMS_WRITE_RATE_LIMIT"


class WriteLimit:
    """Counts one client's writes and refuses those over the limit with a 429."""

    def __init__(self, storage: Storage, limit: str, trusted: TrustedProxies) -> None:
        self.limiter = RateLimiter(storage, parse_limits(limit, SETTING), "durable-writes")
        self.trusted = trusted

    def client(self, scope: Any, headers: Headers) -> str:
        """Who a request counts against: ``token:<digest>`` or ``ip:<address>``."""
        token = bearer_token(headers)
        if token is not None:
            return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
        return "ip:" + client_address(scope, self.trusted)

    async def check(self, scope: Any, headers: Headers) -> None:
        """Count one write; :class:`ProtocolError` 429 with ``Retry-After`` when over."""
        decision = await self.limiter.hit(self.client(scope, headers))
        if not decision.allowed:
            raise ProtocolError(
                429,
                f"too many writes: more than {decision.limit} ({SETTING})",
                {"Retry-After": str(max(1, decision.retry_after))},
            )
