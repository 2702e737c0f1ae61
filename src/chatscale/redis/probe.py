"""A quick look at whether anything listens on Redis's addresses before connecting."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from chatscale.errors import RedisUnavailableError
from chatscale.redis.connection import RedisConnection, connect
from chatscale.redis.uri import RedisNode

if TYPE_CHECKING:
    from chatscale.config import RedisConfig


async def _refused(node: RedisNode, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(node.host, node.port)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError):
        return False  # unresolvable or slow: leave the verdict to the real connection
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def connect_or_refused(config: RedisConfig) -> RedisConnection:
    """:func:`connect`, except that when every configured node refuses the TCP connection
    it fails at once with "connection refused" instead of retrying until
    ``REDIS_CONNECT_TIMEOUT`` runs out (start-up and ``chatscale doctor``)."""
    nodes = config.target.nodes
    refused = await asyncio.gather(*(_refused(n, config.connect_timeout_s) for n in nodes))
    if all(refused):
        shown = ", ".join(str(n) for n in nodes)
        raise RedisUnavailableError(
            f"cannot reach Redis ({config.topology.value} at {shown}): connection refused"
        )
    return await connect(config)
