"""Clearing namespaces on Redis: SCAN + UNLINK in chunks, never FLUSHDB, never KEYS.

* Only keys matching ``<prefix>::<NAMESPACE>:*`` (glob-escaped) are touched, so other
  namespaces and other deployments' prefixes sharing the database are left alone.
* SCAN walks every master of a Cluster (with ``COUNT = REDIS_SCAN_COUNT``), so Redis is
  never blocked by one long command; matched keys are removed with UNLINK (memory is
  freed in a background thread) in chunks of ``REDIS_DELETE_CHUNK_SIZE``.
* On Cluster, and on single endpoints that are sharded behind a proxy
  (``REDIS_CLUSTER_SAFE_DELETE=true``), one UNLINK only ever names keys of one hash slot
  (no CROSSSLOT error); the per-slot commands of a chunk go out in one pipeline.
* The next SCAN runs while the previous chunk is being deleted (one chunk in flight).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from chatscale.cache.namespaces import CacheKeys

if TYPE_CHECKING:
    from chatscale.redis import RedisConnection


@dataclass(frozen=True)
class ClearOptions:
    """``REDIS_SCAN_COUNT``, ``REDIS_DELETE_CHUNK_SIZE`` and ``REDIS_CLUSTER_SAFE_DELETE``."""

    scan_count: int = 1_000
    chunk_size: int = 1_000
    cluster_safe: bool = False


async def _unlink_chunk(client: Any, keys: list[bytes], per_slot: bool) -> int:
    if not per_slot:
        return int(await client.unlink(*keys))
    by_slot: dict[int, list[bytes]] = defaultdict(list)
    for key in keys:
        by_slot[key_slot(key)].append(key)
    async with client.pipeline(transaction=False) as pipe:
        for slot_keys in by_slot.values():
            pipe.execute_command("UNLINK", *slot_keys)
        results = await pipe.execute()
    return sum(int(r) for r in results)


class _Deleter:
    """Deletes chunks in the background, one at a time, while scanning goes on."""

    def __init__(self, client: Any, options: ClearOptions, per_slot: bool) -> None:
        self._client = client
        self._options = options
        self._per_slot = per_slot
        self._pending: list[bytes] = []
        self._task: asyncio.Task[int] | None = None
        self.deleted = 0

    async def add(self, keys: Iterable[bytes]) -> None:
        self._pending.extend(keys)
        size = self._options.chunk_size
        while len(self._pending) >= size:
            chunk, self._pending = self._pending[:size], self._pending[size:]
            await self._launch(chunk)

    async def _launch(self, chunk: list[bytes]) -> None:
        await self._wait()
        self._task = asyncio.create_task(_unlink_chunk(self._client, chunk, self._per_slot))

    async def _wait(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self.deleted += await task

    async def finish(self) -> int:
        if self._pending:
            chunk, self._pending = self._pending, []
            await self._launch(chunk)
        await self._wait()
        return self.deleted

    async def abort(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _scan_node(
    client: Any,
    node: Any,
    pattern: str,
    count: int,
    keep: tuple[bytes, ...] | None,
    deleter: _Deleter,
) -> None:
    cursor = 0
    while True:
        if node is None:
            cursor, keys = await client.scan(cursor=cursor, match=pattern, count=count)
        else:
            cursors, keys = await client.scan(
                cursor=cursor, match=pattern, count=count, target_nodes=node
            )
            cursor = cursors[node.name]
        if keep is not None:
            keys = [k for k in keys if k.startswith(keep)]
        if keys:
            await deleter.add(keys)
        if cursor == 0:
            return


async def clear_namespaces(
    connection: RedisConnection, namespaces: Sequence[CacheKeys], options: ClearOptions
) -> int:
    """Remove every Redis entry of ``namespaces`` under this prefix; returns how many.

    One namespace scans its own pattern; several scan the prefix once and keep the keys
    of those namespaces only.
    """
    if not namespaces:
        return 0
    space = connection.keys
    keep: tuple[bytes, ...] | None
    if len(namespaces) == 1:
        pattern, keep = space.cache_pattern(namespaces[0].value), None
    else:
        pattern = space.all_pattern
        keep = tuple(space.cache(ns.value, "").encode() for ns in namespaces)
    client: Any = connection.client
    cluster = isinstance(client, RedisCluster)
    deleter = _Deleter(client, options, per_slot=cluster or options.cluster_safe)
    nodes: list[Any] = client.get_primaries() if cluster else [None]
    try:
        for node in nodes:
            await _scan_node(client, node, pattern, options.scan_count, keep, deleter)
        return await deleter.finish()
    except BaseException:
        await deleter.abort()
        raise
