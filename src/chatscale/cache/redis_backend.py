"""The Redis backend: ``<prefix>::<NAMESPACE>:<key>`` on any topology."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from chatscale.cache.base import NAMESPACE_TTL, TTL, Cache, ttl_ms
from chatscale.cache.clear import ClearOptions, clear_namespaces
from chatscale.cache.codec import CacheInput, CacheValue, check_key, decode, encode
from chatscale.cache.errors import CacheTypeError
from chatscale.cache.namespaces import CacheKeys

if TYPE_CHECKING:
    from chatscale.redis import RedisConnection

D = TypeVar("D")

# Integers are stored as plain decimal JSON, which INCRBY reads directly; the TTL is set
# only when this call created the key, in the same atomic step. The total is returned as
# the stored text: Lua numbers are doubles and would round integers beyond 2**53.
_INCR = """
local existed = redis.call('EXISTS', KEYS[1])
redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('GET', KEYS[1])
"""

_CAS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

_NOT_INT = ("not an integer", "overflow")


class RedisCache(Cache):
    """One namespace stored on Redis (standalone, Cluster or Sentinel).

    Single-key operations are one command (or one Lua script) each, so they are atomic on
    every topology; ``get_many``/``set_many`` are pipelined and not atomic as a whole.
    """

    backend = "redis"

    def __init__(
        self, namespace: CacheKeys, connection: RedisConnection, clear_options: ClearOptions
    ) -> None:
        super().__init__(namespace)
        self.connection = connection
        self._client: Any = connection.client
        self._cluster = isinstance(connection.client, RedisCluster)
        self._base = connection.keys.cache(namespace.value, "")
        self._clear_options = clear_options
        self._incr_script = self._client.register_script(_INCR)
        self._cas_script = self._client.register_script(_CAS)

    def redis_key(self, key: str) -> str:
        """The Redis key holding ``key`` (``KeySpace.cache``)."""
        return self._base + key

    async def get(self, key: str, default: D | None = None) -> CacheValue | D:
        """The value stored under ``key``, or ``default`` when there is none."""
        # Cache.get without one coroutine layer: this is the hottest call.
        key = check_key(key)
        data: bytes | None = await self._client.get(self._base + key)
        return default if data is None else decode(data, key)

    async def set(self, key: str, value: CacheInput, ttl: TTL = NAMESPACE_TTL) -> None:
        """Store ``value`` under ``key`` (replacing any value and its expiry)."""
        key = check_key(key)
        data = encode(value)
        await self._client.set(self._base + key, data, px=ttl_ms(ttl, self.default_ttl))

    async def _get(self, key: str) -> bytes | None:
        data: bytes | None = await self._client.get(self._base + key)
        return data

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        names = [self._base + k for k in keys]
        if self._cluster:
            found: list[bytes | None] = await self._client.mget_nonatomic(names)
        else:
            found = await self._client.mget(names)
        return found

    async def _set(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        await self._client.set(self._base + key, data, px=ttl_ms)

    async def _set_many(self, items: list[tuple[str, bytes]], ttl_ms: int | None) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, data in items:
                pipe.set(self._base + key, data, px=ttl_ms)
            await pipe.execute()

    async def _add(self, key: str, data: bytes, ttl_ms: int | None) -> bool:
        return bool(await self._client.set(self._base + key, data, px=ttl_ms, nx=True))

    async def _compare_and_set(
        self, key: str, expected: bytes, data: bytes, ttl_ms: int | None
    ) -> bool:
        args = [expected, data, "" if ttl_ms is None else ttl_ms]
        return bool(await self._cas_script(keys=[self._base + key], args=args))

    async def _incr(self, key: str, amount: int, ttl_ms: int | None) -> int:
        args = [amount, "" if ttl_ms is None else ttl_ms]
        try:
            total = await self._incr_script(keys=[self._base + key], args=args)
        except ResponseError as exc:
            text = str(exc)
            if any(marker in text for marker in _NOT_INT):
                problem = (
                    "the result would overflow 64 bits"
                    if "overflow" in text
                    else "its value is not a 64-bit integer"
                )
                raise CacheTypeError(f"cannot incr {key!r}: {problem}") from None
            raise
        return int(total)

    async def _delete(self, key: str) -> bool:
        return bool(await self._client.delete(self._base + key))

    async def _clear(self) -> int:
        return await clear_namespaces(self.connection, [self.namespace], self._clear_options)
