"""Whether the Redis password chatscale is given is one the server asks for.

Redis answers ``AUTH <password>`` on a server without a password with an error that
redis-py ignores, so a password meant to protect the data can be silently unused.
"""

from __future__ import annotations

import asyncio
import dataclasses

from redis.exceptions import RedisError

from chatscale.redis.client import create_client
from chatscale.redis.connection import RedisConnection, close_client


async def unused_password(connection: RedisConnection, timeout_s: float = 5.0) -> str | None:
    """A one-line warning when a password is configured but Redis answers without it
    (``None`` otherwise, and for a named ACL user, whose password selects the user)."""
    config = connection.config
    target = config.target
    if target.password is None or target.username not in (None, "default"):
        return None
    anonymous = dataclasses.replace(
        config,
        target=dataclasses.replace(target, username=None, password=None),
        retry_max_attempts=1,
    )
    client = create_client(anonymous)
    try:
        async with asyncio.timeout(timeout_s):
            await client.ping()
    except (RedisError, OSError, TimeoutError):
        return None  # refused without the password: it is used
    finally:
        await close_client(client)
    return (
        "a Redis password is set (REDIS_URI or REDIS_PASSWORD) but Redis accepts "
        "connections without one: the server does not use it (set requirepass or an ACL "
        "user on the Redis side)"
    )
