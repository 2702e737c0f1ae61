"""Choosing the stream backend from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatscale.streams.base import StreamManager
from chatscale.streams.memory import MemoryStreamManager

if TYPE_CHECKING:
    from chatscale.config import Settings
    from chatscale.redis import RedisConnection


def create_stream_manager(
    settings: Settings, redis: RedisConnection | None, *, instance_id: str | None = None
) -> StreamManager:
    """The Redis backend when ``USE_REDIS_STREAMS`` is on, else the memory backend.

    Call ``await manager.start()`` before use and ``await manager.close()`` at the end.
    """
    if settings.use_redis_streams:
        from chatscale.errors import ConfigError

        if redis is None:
            raise ConfigError(
                "USE_REDIS_STREAMS", "true", "needs a Redis connection", "connect() first"
            )
        from chatscale.streams.redis import RedisStreamManager

        return RedisStreamManager(settings, redis, instance_id=instance_id)
    return MemoryStreamManager(settings, instance_id=instance_id)
