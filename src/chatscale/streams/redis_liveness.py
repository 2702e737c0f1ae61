"""Liveness of the Redis backend: this instance's heartbeat, and the reaper that finds the
jobs of instances that stopped.

Heartbeats are scored with Redis's clock (``beat.lua`` reads ``TIME``), so instances whose
clocks disagree judge each other alike. An instance that could not reach Redis is no
evidence that the others are dead: when every heartbeat is stale at once, Redis (or this
instance) was away, not the fleet. So the reaper claims nothing until this instance has
itself been in steady contact with Redis for a whole lease: an instance counts as dead only
if it failed to beat during a lease in which Redis demonstrably answered. A Redis stall
longer than the lease therefore moves no job; the producers keep their events in memory
and write them when Redis is back.

The reaper runs in its own task (claims never delay this instance's own heartbeat) and
claims a dead instance's jobs concurrently, a bounded number at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chatscale.redis.keys import KeySpace
from chatscale.streams.scripts import BEAT

log = logging.getLogger(__name__)

#: Jobs claimed at once by one reaper.
_CLAIM_CONCURRENCY = 16

#: Claims one job of a stopped instance: ``(instance, job id) -> None``.
Claimer = Callable[[str, str], Awaitable[Any]]


class Liveness:
    """Beats for this instance; claims the jobs of instances that stopped beating."""

    def __init__(
        self,
        client: Any,
        keys: KeySpace,
        *,
        instance_id: str,
        lease_s: float,
        jobs_ttl_s: int,
        claim: Claimer,
        local_jobs: Callable[[], set[str]],
    ) -> None:
        self.client = client
        self.keys = keys
        self.instance_id = instance_id
        self.lease_ms = int(lease_s * 1000)
        self.period_s = lease_s / 3
        self.jobs_ttl_s = jobs_ttl_s
        self._claim = claim
        self._local_jobs = local_jobs
        self._jobs_key = keys.stream_instance_jobs(instance_id)
        #: Redis time (ms) of the first beat of the current unbroken run of beats, and of
        #: the last successful beat (``None``: the last beat failed).
        self.contact_since: int | None = None
        self.last_beat: int | None = None
        self._last_beat_mono = 0.0
        self.beating = True
        self.reaping = True
        self.claiming: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # --- clock and heartbeat ------------------------------------------------------------
    async def now_ms(self) -> int:
        """Redis's clock, in milliseconds."""
        return int(await BEAT(self.client, [self.keys.stream_instances], ["", ""]))

    async def beat(self, score: int | None = None) -> int:
        """Write this instance's heartbeat (``score`` 0 hands its jobs over); Redis time."""
        args = [self.instance_id, "" if score is None else str(score)]
        try:
            now, _ = await asyncio.gather(
                BEAT(self.client, [self.keys.stream_instances], args),
                self.client.expire(self._jobs_key, self.jobs_ttl_s),
            )
        except Exception:
            self.contact_since = self.last_beat = None
            raise
        now = int(now)
        mono = time.monotonic()
        # A gap between two beats (Redis or this process stalled) breaks the run of beats
        # as much as an error does.
        gap = self.last_beat is None or mono - self._last_beat_mono > 2 * self.period_s
        if gap or self.contact_since is None:
            self.contact_since = now
        self.last_beat = now
        self._last_beat_mono = mono
        return now

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat_loop()), loop.create_task(self._reap_loop())]

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            if not self.beating:
                continue
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream heartbeat failed: %s", exc)

    async def hand_over(self) -> None:
        """Stop beating and mark this instance stopped (score 0): other instances' reapers
        claim its jobs at their next round."""
        self.beating = False
        await self.beat(score=0)

    # --- reaper -------------------------------------------------------------------------
    def may_claim(self, now_ms: int) -> bool:
        """Whether this instance has been in steady contact with Redis for a whole lease."""
        since, last = self.contact_since, self.last_beat
        if since is None or last is None:
            return False
        fresh = time.monotonic() - self._last_beat_mono <= 2 * self.period_s
        return fresh and now_ms - since >= self.lease_ms

    async def dead(self, instance: str) -> bool:
        """Whether ``instance`` stopped beating (by Redis's clock)."""
        score = await self.client.zscore(self.keys.stream_instances, instance)
        return score is None or score < await self.now_ms() - self.lease_ms

    async def alive_others(self) -> list[str]:
        """Other instances with a fresh heartbeat."""
        cutoff = await self.now_ms() - self.lease_ms
        found = await self.client.zrangebyscore(self.keys.stream_instances, cutoff, "+inf")
        return [i.decode() for i in found if i.decode() != self.instance_id]

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            if not self.reaping:
                continue
            try:
                await self.reap()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream reaper: %s", exc)

    async def reap(self) -> None:
        """One round: claim the jobs of every stopped instance, and this instance's own
        listed jobs that it does not produce (a claim interrupted by an error, or a restart
        under the same instance id)."""
        now = await self.now_ms()
        if not self.may_claim(now):
            return
        dead = await self.client.zrangebyscore(
            self.keys.stream_instances, "-inf", now - self.lease_ms
        )
        limit = asyncio.Semaphore(_CLAIM_CONCURRENCY)
        for raw in dead:
            instance = raw.decode()
            if instance == self.instance_id:
                continue
            jobs_key = self.keys.stream_instance_jobs(instance)
            jobs = [j.decode() for j in await self.client.smembers(jobs_key)]
            await asyncio.gather(*(self._bounded(limit, instance, job) for job in jobs))
            if not await self.client.scard(jobs_key):
                await self.client.zrem(self.keys.stream_instances, instance)
        local = self._local_jobs()
        mine = [j.decode() for j in await self.client.smembers(self._jobs_key)]
        orphans = [j for j in mine if j not in local and j not in self.claiming]
        await asyncio.gather(*(self._bounded(limit, self.instance_id, j) for j in orphans))

    async def _bounded(self, limit: asyncio.Semaphore, instance: str, job_id: str) -> None:
        if job_id in self.claiming:
            return
        async with limit:
            try:
                await self._claim(instance, job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("claiming job %s of instance %s: %s", job_id, instance, exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
