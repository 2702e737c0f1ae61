"""Liveness of the Redis backend: this instance's heartbeat, and the reaper that finds the
jobs of instances that stopped.

Heartbeats are scored with Redis's clock (``beat.lua`` reads ``TIME``), so instances whose
clocks disagree judge each other alike. An instance that could not reach Redis is no
evidence that the others are dead: when every heartbeat is stale at once, Redis (or this
instance) was away, not the fleet. So the reaper claims nothing until this instance has
itself been in steady contact with Redis for two leases: an instance counts as dead only if
it failed to beat during a lease in which Redis demonstrably answered, after a lease left
to every instance to come back from the same fault. A Redis stall
longer than the lease therefore moves no job; the producers keep their events in memory
and write them when Redis is back.

An instance that drained hands its jobs over by setting its heartbeat to 0 (no fault ever
writes that score): those are claimed at once, without the two leases, so that a redeploy
whose replacement instances have just started does not leave answers waiting for them.

The reaper runs in its own task (claims never delay this instance's own heartbeat) and
claims a dead instance's jobs concurrently, a bounded number at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from chatscale.failures import FailureLog
from chatscale.redis.keys import KeySpace
from chatscale.redis.sentinel import AgreedSentinelPool, SentinelsDisagree
from chatscale.redis.transient import TRANSIENT_REDIS_ERRORS
from chatscale.streams.scripts import BEAT
from chatscale.tasks import stop_task

log = logging.getLogger(__name__)

#: A failed beat is tried again after a fifth of its period (while the period lasts).
_BEAT_TRIES = 5

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
        beat_client: Any = None,
    ) -> None:
        self.client = client
        #: What the heartbeats and the instance index go through: on Cluster a client of
        #: their own, that talks only to the index's shard (see ``RedisStreamManager``).
        self.beat_client = beat_client if beat_client is not None else client
        self.keys = keys
        self.instance_id = instance_id
        self.lease_ms = int(lease_s * 1000)
        self.period_s = lease_s / 3
        self.jobs_ttl_s = jobs_ttl_s
        self._claim = claim
        self._local_jobs = local_jobs
        self._jobs_key = keys.stream_instance_jobs(instance_id)
        self._beat_failures = FailureLog(log, "stream heartbeat")
        self._reap_failures = FailureLog(log, "stream reaper")
        #: On Sentinel: the pool, and the master address the sentinels named last.
        pool = getattr(client, "connection_pool", None)
        self._sentinel_pool = pool if isinstance(pool, AgreedSentinelPool) else None
        self._master: Any = None
        #: Called when the master moved (the hub reconnects its pub/sub connections).
        self.on_master_moved: Callable[[], None] | None = None
        #: Called with the master's count of connected replicas at every beat (outside
        #: Cluster, whose nodes the writer does not wait for).
        self.on_replicas: Callable[[int], None] | None = None
        self._is_cluster = isinstance(client, RedisCluster)
        self._info_allowed = True
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
        return int(await BEAT(self.beat_client, [self.keys.stream_instances], ["", ""]))

    async def beat(self, score: int | None = None) -> int:
        """Write this instance's heartbeat (``score`` 0 hands its jobs over); Redis time."""
        args = [self.instance_id, "" if score is None else str(score)]
        try:
            if self._sentinel_pool is not None:
                await self._follow_master(self._sentinel_pool)
            if self.beat_client is self.client:
                now, _, _ = await asyncio.gather(
                    BEAT(self.client, [self.keys.stream_instances], args),
                    self.client.expire(self._jobs_key, self.jobs_ttl_s),
                    self._replication(),
                )
            else:
                # The beat alone, on its own client: the index of this instance's jobs
                # lives on another shard, maybe the failing one, and is kept by the reaper
                # (a refresh waiting on a dead master in the beat delayed the next beats
                # past the lease).
                now = await BEAT(self.beat_client, [self.keys.stream_instances], args)
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

    async def _replication(self) -> None:
        if self._is_cluster or self.on_replicas is None or not self._info_allowed:
            return
        try:
            info: dict[str, Any] = await self.client.info("replication")
        except TRANSIENT_REDIS_ERRORS:
            raise  # an error reply of a failover is no refusal: asked again at the next beat
        except ResponseError as exc:  # an ACL user without INFO: no replica waits
            log.warning("cannot read INFO replication (%s); not waiting for replicas", exc)
            self._info_allowed = False
            return
        self.on_replicas(int(info.get("connected_slaves", 0)))

    async def _follow_master(self, pool: AgreedSentinelPool) -> None:
        """Ask the sentinels for the master at every beat; when it moved, or while they
        disagree, drop every connection (in use or idle, and the pub/sub ones).

        After a failover, a former master that comes back takes writes until the
        sentinels demote it: an instance whose connections stayed with it would beat (and
        publish) where no other instance looks, look dead to them, and have its jobs taken
        while it runs (split brain). The pool connects only to the master every answering
        sentinel names (:mod:`chatscale.redis.sentinel`); this drops the connections made
        before.
        """
        try:
            master = await pool.get_master_address()
        except SentinelsDisagree:
            if self._master is not None:
                log.warning("the sentinels disagree on the Redis master; reconnecting later")
                self._master = None
                await self._reconnect_all(pool)
            raise
        previous, self._master = self._master, master
        if previous is not None and master != previous:
            log.warning("Redis master moved to %s:%s; reconnecting everything", *master)
            await self._reconnect_all(pool)

    async def _reconnect_all(self, pool: AgreedSentinelPool) -> None:
        # The new master's heartbeats mean something only once every instance had the
        # time to follow it: this instance's run of contact starts again.
        self.contact_since = self.last_beat = None
        if self._master is None:
            pool.forget_master()
        await pool.disconnect(inuse_connections=True)
        if self.on_master_moved is not None:
            self.on_master_moved()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat_loop()), loop.create_task(self._reap_loop())]

    async def _beat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            # Beats keep their period whatever one of them cost (a beat that waited its
            # whole deadline must not push the next one a period later).
            due = max(due + self.period_s, loop.time())
            await asyncio.sleep(due - loop.time())
            if not self.beating:
                continue
            try:
                await self._beat_within_period()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.contact_since = self.last_beat = None
                self._beat_failures.failed(exc)
            else:
                self._beat_failures.succeeded()

    async def _beat_within_period(self) -> None:
        """One beat, tried again while its period lasts when an attempt fails fast.

        A beat later than its period is no beat: the client's own retries (with backoff up
        to REDIS_RETRY_MAX_DELAY) could otherwise land it after the lease, once Redis is
        back, while another instance has been beating. Within the period, though, a fast
        failure is worth another try: during a Cluster failover redis-py rediscovers the
        cluster through its first listed master, which may be the dead one, and fails the
        command at once (connection refused); waiting a whole period for the next beat
        made every instance silent for up to a lease (seen in CI: 1.5 s of a 1.5 s lease).
        """
        last: Exception | None = None
        try:
            async with asyncio.timeout(self.period_s):
                while True:
                    try:
                        await self.beat()
                        return
                    except Exception as exc:
                        last = exc
                    await asyncio.sleep(self.period_s / _BEAT_TRIES)
        except TimeoutError:
            if last is None:
                raise
            raise last from None

    async def hand_over(self) -> None:
        """Stop beating and mark this instance stopped (score 0): other instances' reapers
        claim its jobs at their next round."""
        self.beating = False
        await self.beat(score=0)

    # --- reaper -------------------------------------------------------------------------
    def may_claim(self, now_ms: int) -> bool:
        """Whether this instance has been in steady contact with Redis for two leases.

        One lease of its own contact shows that Redis answered it; the second leaves the
        others the time to come back from the same fault: after a Cluster failover each
        instance rediscovers the slot map on its own, and one lease was not enough (three
        living instances' jobs taken, checker cluster seed 3011)."""
        since = self.contact_since
        if since is None or not self._in_contact():
            return False
        return now_ms - since >= 2 * self.lease_ms

    def _in_contact(self) -> bool:
        """Whether this instance's last heartbeat went through within two periods."""
        if self.contact_since is None or self.last_beat is None:
            return False
        return time.monotonic() - self._last_beat_mono <= 2 * self.period_s

    async def dead(self, instance: str) -> bool:
        """Whether ``instance`` stopped beating (by Redis's clock)."""
        score = await self.beat_client.zscore(self.keys.stream_instances, instance)
        return score is None or score < await self.now_ms() - self.lease_ms

    async def alive_others(self) -> list[str]:
        """Other instances with a fresh heartbeat."""
        cutoff = await self.now_ms() - self.lease_ms
        found = await self.beat_client.zrangebyscore(self.keys.stream_instances, cutoff, "+inf")
        return [i.decode() for i in found if i.decode() != self.instance_id]

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            if not self.reaping:
                continue
            try:
                if self.beat_client is not self.client:
                    # On Cluster the beat leaves this to the reaper (see ``beat``).
                    await self.client.expire(self._jobs_key, self.jobs_ttl_s)
                await self.reap()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._reap_failures.failed(exc)
            else:
                self._reap_failures.succeeded()

    async def reap(self) -> None:
        """One round: claim the jobs of every stopped instance, and this instance's own
        listed jobs that it does not produce (a claim interrupted by an error, or a restart
        under the same instance id)."""
        if self._sentinel_pool is not None:
            # The master may have moved since the last beat: the heartbeats this round
            # would read are then the new master's, which nobody had time to refresh.
            await self._follow_master(self._sentinel_pool)
        now = await self.now_ms()
        steady = self.may_claim(now)
        if not steady and not self._in_contact():
            return
        # Without two leases of steady contact, only the instances that handed their jobs
        # over (score 0, see ``hand_over``): a stale heartbeat may be this instance's own
        # fault, a hand-over never is.
        dead = await self.beat_client.zrangebyscore(
            self.keys.stream_instances,
            "-inf" if steady else 0,
            now - self.lease_ms if steady else 0,
            withscores=True,
        )
        limit = asyncio.Semaphore(_CLAIM_CONCURRENCY)
        for raw, score in dead:
            instance = raw.decode()
            if instance == self.instance_id:
                continue
            jobs_key = self.keys.stream_instance_jobs(instance)
            jobs = [j.decode() for j in await self.client.smembers(jobs_key)]
            if jobs and not score:
                log.info("instance %s handed its %d jobs over: claiming them", instance, len(jobs))
            elif jobs:
                log.warning(
                    "instance %s silent for %d ms (this one in contact for %d ms): "
                    "claiming its %d jobs",
                    instance,
                    now - score,
                    now - (self.contact_since or now),
                    len(jobs),
                )
            await asyncio.gather(*(self._bounded(limit, instance, job) for job in jobs))
            if not await self.client.scard(jobs_key):
                await self.beat_client.zrem(self.keys.stream_instances, instance)
        if not steady:
            return
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
        """Stop the heartbeat and the reaper."""
        for task in self._tasks:
            await stop_task(task)
