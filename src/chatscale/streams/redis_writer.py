"""The write side of the Redis backend: every coalescing window, each running job's new
events go to its own log with one fenced script call (``append.lua``), all jobs' calls in
one pipelined round trip.

The script stores and publishes in one step, under the producer's epoch: whatever a
subscriber receives live is already stored, a producer that lost its job (a zombie) can
neither store nor publish anything, and a job's log has exactly one writer at a time. The
writer keeps each running job's encoded batches (about the job's text once) until its final
event is stored, so that it can write them all again when Redis loses them (a failover, a
restart without persistence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from chatscale.failures import FailureLog
from chatscale.redis.line import Line, node_round_trip
from chatscale.redis.replication import WAIT_MS, Replication
from chatscale.streams import codec
from chatscale.streams.model import Event, status_of
from chatscale.streams.redis_store import Batch
from chatscale.streams.scripts import APPEND, CREATE, LISTED, TELL
from chatscale.tasks import Background

if TYPE_CHECKING:
    from chatscale.redis.keys import KeySpace
    from chatscale.streams.backlog import Backlog
    from chatscale.streams.metrics import StreamMetrics
    from chatscale.streams.producer import Producer

log = logging.getLogger(__name__)

_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0
#: How often running jobs are checked for a producer silent longer than STREAM_RUNNING_TTL.
_STALL_CHECK_S = 1.0
#: How long (seconds) an end taken as stored without a replica's copy is checked again,
#: once per :data:`_STALL_CHECK_S`, and written again if a failover lost it.
VERIFY_S = 120.0
#: Most ends under such a check at once (the oldest stop being checked first).
VERIFY_MAX = 10_000
#: Most batches in one append.lua call (outside Cluster): a window with more jobs is sent
#: as several calls in one pipeline, so that no single script holds Redis for long.
CALL_BATCHES = 128


@dataclass(slots=True)
class JobWrite:
    """What the writer keeps of one job this instance produces, until its end is stored."""

    producer: Producer
    #: Every event handed over so far, as encoded batches (what append.lua stores).
    batches: list[Batch] = field(default_factory=list)
    #: Final status carried by the last batch ("" while running).
    final_status: str = ""
    #: Last sequence number Redis confirmed it stores for this epoch.
    stored: int = 0
    touched: float = field(default_factory=time.monotonic)
    #: Since when no replica confirmed the stored end (``time.monotonic``; 0 = not yet
    #: unconfirmed; see ``Writer._outcome``).
    unconfirmed: float = 0.0
    #: Done once the final event is stored, or the job was taken away.
    done: asyncio.Future[None] | None = None
    #: The end was told and recorded without a replica's copy (replication degraded):
    #: until when (``time.monotonic``) it is checked again (0 = it is not).
    verify_until: float = 0.0
    #: Redis lost some of the job's log since the end was told: tell it again once
    #: written again.
    repaired: bool = False
    #: When (``time.monotonic``) an append last carried the job's TTL (0 = never): the
    #: TTLs are set with the first and the final batch and refreshed now and then, not
    #: with every window (two commands of the five an append costs Redis).
    ttl_sent: float = 0.0
    #: The job's hash and log keys (encoded once: they go with every batch).
    keys: list[bytes] = field(default_factory=list)

    def release(self) -> None:
        """Wake whoever waits for the end to be stored (:meth:`Writer.stored_end`)."""
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    @property
    def handed(self) -> int:
        """Last sequence number handed over by the producer."""
        return self.batches[-1].last if self.batches else self.stored

    def unsent(self) -> list[Batch]:
        """The batches after ``stored`` (one cut at ``stored`` if it falls inside one)."""
        out: list[Batch] = []
        for batch in reversed(self.batches):
            if batch.last <= self.stored:
                break
            out.append(batch)
        out.reverse()
        if out and out[0].first <= self.stored:
            skip = self.stored + 1 - out[0].first
            items = codec.loads(out[0].items)[skip:]
            out[0] = Batch(self.stored + 1, out[0].last, codec.dumps(items))
        return out


#: Called with a job whose final event is now stored under its producer's epoch.
EndHandler = Callable[["Producer"], Awaitable[None]]


class Writer:
    """Writes this instance's running jobs to Redis; reports what Redis answered."""

    def __init__(
        self,
        client: Any,
        keys: KeySpace,
        metrics: StreamMetrics,
        *,
        instance_id: str,
        publish_cmd: str,
        coalesce_s: float,
        running_ttl: int,
        finished_ttl: int,
        stall_s: float,
        deadline_s: float,
        backlog: Backlog,
        replication: Replication,
        on_fenced: Callable[[JobWrite], None],
        on_stored_end: EndHandler,
    ) -> None:
        self.client = client
        self.keys = keys
        self.metrics = metrics
        self.instance_id = instance_id
        self.publish_cmd = publish_cmd
        self.coalesce_s = coalesce_s
        self.running_ttl = running_ttl
        self.finished_ttl = finished_ttl
        #: How often a running job's TTLs are refreshed: a tenth of their length, so that a
        #: key never comes near expiring while its job runs.
        self.ttl_refresh_s = running_ttl / 10
        self.stall_s = stall_s
        #: Expiry of the indexes a job is listed in (a running job's life, then its
        #: finished life).
        self.index_ttl = running_ttl + finished_ttl
        #: The longest one write round trip may take (REDIS_SOCKET_TIMEOUT).
        self.deadline_s = deadline_s
        self.backlog = backlog
        self._on_fenced = on_fenced
        self._on_stored_end = on_stored_end
        self._failures = FailureLog(log, "stream writer")
        self.jobs: dict[str, JobWrite] = {}
        #: Jobs whose end is stored and being recorded: still in the instance's set, and
        #: no orphans of its own reaper.
        self.ending: set[str] = set()
        #: Whether the manager records ended jobs (``set_recorder``): every job hash made,
        #: at creation or again after Redis lost it, is then marked unrecorded.
        self.records = False
        #: When the master has been seen with replicas, a job's end is only taken as
        #: stored once one of them has it.
        self.replication = replication
        #: On Cluster: replication as judged per shard (master node name).
        self._shards: dict[str, Replication] = {}
        self._kick = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._flushed: asyncio.Future[None] | None = None
        self._retry_s = _RETRY_FIRST_S
        self._stall_checked = time.monotonic()
        self._background = Background("stream writer")
        #: Outside Cluster, every write goes over one connection of the writer's own, which
        #: loads the append script as it connects.
        self._line = (
            None
            if isinstance(client, RedisCluster)
            else Line(client.connection_pool, scripts=(APPEND.source,))
        )
        #: The deadline of the write in flight; :meth:`interrupt` brings it forward.
        self._deadline: asyncio.Timeout | None = None
        self._interrupted = False
        #: Producers whose end was stored this turn of the loop (see :meth:`_end`).
        self._ending: list[Producer] = []
        #: Jobs a write left with unsent batches (refused, failed): written again next.
        self._owed: dict[str, JobWrite] = {}
        #: When the next round of checks of unconfirmed ends is due (``time.monotonic``).
        self._verify_round = 0.0
        #: How long an unconfirmed end is checked (:data:`VERIFY_S`).
        self.verify_s = VERIFY_S
        self.closed = False

    # --- producers ----------------------------------------------------------------------
    def adopt(self, producer: Producer, batches: list[Batch], stored: int) -> JobWrite:
        """Write ``producer``'s job from now on (``batches`` already stored up to
        ``stored``). A stale producer of the same job here (this instance took back a job
        it was thought to have lost) is fenced first: nothing it numbers may mix in."""
        stale = self.jobs.get(producer.job_id)
        if stale is not None:
            self._on_fenced(stale)
        job_id = producer.job_id
        keys = [self.keys.stream_job(job_id).encode(), self.keys.stream_log(job_id).encode()]
        job = JobWrite(producer, list(batches), stored=stored, keys=keys)
        self.jobs[producer.job_id] = job
        return job

    def schedule(self) -> None:
        """Producers have new events: write them within the coalescing window."""
        if self._kick.is_set() or self._timer is not None:
            return
        if self.coalesce_s > 0:
            self._timer = asyncio.get_running_loop().call_later(self.coalesce_s, self._fire)
        else:
            self._kick.set()

    def kick(self) -> None:
        """Write now."""
        self._kick.set()

    def _fire(self) -> None:
        self._timer = None
        self._kick.set()

    async def flushed(self) -> None:
        """Until the next flush has run (backpressure for fast producers)."""
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
        waiter = self._flushed
        self._kick.set()
        # Shielded: every waiting producer shares this future; one cancelled producer must
        # not cancel the others' wait.
        await asyncio.shield(waiter)

    async def stored_end(self, producer: Producer, timeout: float) -> None:  # noqa: ASYNC109
        """Until ``producer``'s final event is stored (or the job was taken away), at most
        ``timeout`` seconds: the writer keeps retrying after that."""
        job = self.jobs.get(producer.job_id)
        if job is None or job.producer is not producer:
            return
        if job.done is None:
            job.done = asyncio.get_running_loop().create_future()
        self._kick.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(job.done)

    def running(self) -> list[JobWrite]:
        """The jobs whose end is not yet stored (not the ends kept under check)."""
        return [job for job in self.jobs.values() if not job.verify_until]

    def pending(self) -> int:
        """Events handed over but not confirmed stored, over every job."""
        return sum(job.handed - job.stored for job in self.jobs.values())

    def forget(self, job: JobWrite) -> bool:
        """Stop writing ``job``; whether it was this instance's current writer of it."""
        job.release()
        if self.jobs.get(job.producer.job_id) is not job:
            return False
        del self.jobs[job.producer.job_id]
        return True

    # --- the writing task ---------------------------------------------------------------
    async def run(self) -> None:
        """Flush whenever kicked, retrying failed writes with a growing delay."""
        while not self.closed:
            # Wakes at least once per stall check, even with nothing to write.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STALL_CHECK_S):
                    await self._kick.wait()
            self._kick.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures.failed(exc)
                self._retry_later()
            else:
                self._failures.succeeded()

    def _retry_later(self) -> None:
        if self._timer is None and not self.closed:
            self._timer = asyncio.get_running_loop().call_later(self._retry_s, self._fire)
        self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S)

    async def flush(self) -> None:
        """Number every dirty producer's events and write every job's unsent batches.

        One flush at a time (the writer's connection carries one round trip at a time): the
        writing task's (:meth:`run`), or a last one once that task has stopped."""
        waiter, self._flushed = self._flushed, None
        try:
            # Only the jobs with new events, those a write left owing, and once a second
            # every job (the checks of ends) are looked at: a window must not cost as many
            # steps as there are running jobs.
            owed, self._owed = self._owed, {}
            self._take_dirty(owed)
            self._check_stalls()
            if self._check_ends():
                owed = dict(self.jobs)
            calls = [
                (job, batch)
                for job in owed.values()
                if job.handed > job.stored
                for batch in job.unsent()
            ]
            try:
                if calls:
                    await self._write(calls)
            finally:
                self._owed = {
                    job_id: job
                    for job_id, job in owed.items()
                    if job.handed > job.stored and self.jobs.get(job_id) is job
                }
            if self._owed:
                self._retry_later()  # failed or refused batches go again
            else:
                self._retry_s = _RETRY_FIRST_S
        finally:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _take_dirty(self, into: dict[str, JobWrite]) -> None:
        """Number the events every producer buffered; their jobs go ``into``."""
        now = time.monotonic()
        for producer in self.backlog.take():
            events = producer._take()
            job = self.jobs.get(producer.job_id)
            if not events or job is None or job.producer is not producer:
                continue  # ended, or a stale producer (see ``adopt``): its events go nowhere
            job.touched = now
            job.batches.append(_batch(events))
            into[producer.job_id] = job
            if events[-1].final:
                job.final_status = status_of(events[-1].type).value

    def _check_stalls(self) -> None:
        now = time.monotonic()
        if now - self._stall_checked < _STALL_CHECK_S:
            return
        self._stall_checked = now
        for job in list(self.jobs.values()):
            producer = job.producer
            if not producer.closed and now - job.touched > self.stall_s:
                producer.close_with(
                    "error",
                    {"message": "the response stalled (no output for STREAM_RUNNING_TTL)"},
                    reason="stalled",
                )

    def _check_ends(self) -> bool:
        """Send again, with a WAIT, the final batch of every end under check whose last
        round is over (see ``_verify``); drop the checks that ran out of time. Whether a
        round ran (once per :data:`_STALL_CHECK_S`)."""
        if self._verify_round > time.monotonic():
            return False
        self._verify_round = time.monotonic() + _STALL_CHECK_S
        checked = [job for job in self.jobs.values() if job.verify_until]
        for job in checked[: max(0, len(checked) - VERIFY_MAX)]:
            self._stop_verifying(job, "too many ends under check")
        for job in checked[-VERIFY_MAX:]:
            if time.monotonic() > job.verify_until:
                self._stop_verifying(job, f"no replica confirmed it in {self.verify_s:.0f} s")
            elif job.stored >= job.handed and job.batches:
                job.stored = job.batches[-1].first - 1
        return True

    def _stop_verifying(self, job: JobWrite, why: str) -> None:
        log.warning("end of job %s: stops being checked (%s)", job.producer.job_id, why)
        self.metrics.ends_unverified += 1
        self.forget(job)

    async def _write(self, calls: list[tuple[JobWrite, Batch]]) -> None:
        # One deadline for the round trip, connecting included: a connection stuck on a
        # master that is being demoted (a Sentinel failover) held the writer for 15 s;
        # cut short, its connection is dropped and the batches go again, to the new master.
        # (asyncio.timeout tells its own cancellation from the writer's being stopped.)
        self._interrupted = False
        try:
            async with asyncio.timeout(self.deadline_s) as self._deadline:
                await self._write_once(calls)
        except TimeoutError:
            if self._interrupted:
                raise RedisConnectionError(
                    "a write was abandoned: the Redis master moved"
                ) from None
            raise TimeoutError("a write took longer than REDIS_SOCKET_TIMEOUT") from None
        finally:
            self._deadline = None

    def interrupt(self) -> None:
        """Abandon the write in flight (the Redis master moved): its connection is dropped
        and its batches go again with the next flush, at once."""
        deadline = self._deadline
        if deadline is not None and not deadline.expired():
            self._interrupted = True
            deadline.reschedule(asyncio.get_running_loop().time())
            self._kick.set()

    async def _write_once(self, calls: list[tuple[JobWrite, Batch]]) -> None:
        # A job's end must survive a failover: when the master has replicas, the appends
        # are followed by a WAIT on the same connection, and the end is published (told to
        # subscribers) only once a replica has it (see ``_outcome``). Without this, an end
        # acknowledged by a master that then lost its role was gone, and a client told the
        # answer was done read it as still running on the new master.
        cluster = isinstance(self.client, RedisCluster)
        finals = any(self._final(job, batch) for job, batch in calls)
        if cluster and finals:
            self.replication.saw(len(self.client.get_replicas()))
        ending = finals and self.replication.waits
        now = time.monotonic()
        args = [self._append_args(job, batch, now, hold=ending) for job, batch in calls]
        replies: list[Any]
        # Per call: whether the replicas confirmed it (``None``: not waited for), and the
        # state of replication it was waited under.
        acked: list[tuple[bool | None, Replication]] = [(None, self.replication)] * len(calls)
        if cluster:
            # One slot per script: one call per batch. redis-py's Cluster pipeline does not
            # run EVALSHA; concurrent calls still share round trips per node. A job's
            # batches go in order: one call chain per job.
            replies = await self._write_cluster(calls, args, acked, wait=ending)
        else:
            replies = await self._write_pipelined(args, wait=ending)
            if ending:
                reply = replies.pop()
                count = reply if isinstance(reply, int) else 0
                self.replication.acked(count)
                acked = [(self.replication.confirms(count), self.replication)] * len(calls)
        self.metrics.redis_round_trips += 1
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # A restarted or failed-over Redis forgot the script: load it; the refused
            # batches are still unsent and go again at once.
            await self.client.script_load(APPEND.source)
            self._kick.set()
        for (job, batch), reply, (confirmed, state) in zip(calls, replies, acked, strict=True):
            if isinstance(reply, BaseException):
                if not isinstance(reply, NoScriptError):
                    log.warning("writing job %s: %s", job.producer.job_id, reply)
                continue
            await self._outcome(job, batch, reply, confirmed, state)

    async def _write_pipelined(
        self, args: list[tuple[list[bytes], bytes]], *, wait: bool
    ) -> list[Any]:
        """Every batch in as few append.lua calls as :data:`CALL_BATCHES` allows, in one
        round trip (followed by a WAIT when ``wait``). Returns one reply (or exception) per
        batch, then the WAIT's."""
        groups = [args[i : i + CALL_BATCHES] for i in range(0, len(args), CALL_BATCHES)]
        commands: list[tuple[Any, ...]] = []
        for group in groups:
            keys, argv = self._call(group)
            commands.append(("EVALSHA", APPEND.sha, len(keys), *keys, *argv))
        if wait:
            commands.append(("WAIT", self.replication.wanted, WAIT_MS))
        assert self._line is not None
        answers = await self._line.round_trip(commands)
        replies: list[Any] = []
        for group, answer in zip(groups, answers, strict=False):
            if isinstance(answer, BaseException):
                replies.extend([answer] * len(group))
            else:
                replies.extend(answer[i : i + 3] for i in range(0, len(answer), 3))
        replies.extend(answers[len(groups) :])
        return replies

    def _call(self, group: list[tuple[list[bytes], bytes]]) -> tuple[list[bytes], list[Any]]:
        """One append.lua call's keys and arguments, for batches ``group``."""
        keys: list[bytes] = []
        argv: list[Any] = [time.time(), self.publish_cmd]
        for batch_keys, arg in group:
            keys += batch_keys
            argv.append(arg)
        return keys, argv

    async def _write_cluster(
        self,
        calls: list[tuple[JobWrite, Batch]],
        args: list[tuple[list[bytes], bytes]],
        acked: list[tuple[bool | None, Replication]],
        *,
        wait: bool,
    ) -> list[Any]:
        chains: dict[str, list[int]] = {}
        for index, (job, _) in enumerate(calls):
            chains.setdefault(job.producer.job_id, []).append(index)
        replies: list[Any] = [None] * len(calls)

        async def chain(indexes: list[int]) -> None:
            for index in indexes:
                job, batch = calls[index]
                try:
                    keys, argv = self._call([args[index]])
                    if wait and self._final(job, batch):
                        replies[index], acked[index] = await self._append_on_shard(keys, argv)
                    else:
                        replies[index] = (await APPEND(self.client, keys, argv))[:3]
                except Exception as exc:
                    replies[index] = exc

        await asyncio.gather(*(chain(indexes) for indexes in chains.values()))
        return replies

    async def _append_on_shard(
        self, keys: list[bytes], argv: list[Any]
    ) -> tuple[Any, tuple[bool | None, Replication]]:
        """On Cluster: a final batch's append and a WAIT, pipelined on one connection of the
        master that serves the job's slot (WAIT covers only its own connection's writes).
        Replication is judged per shard: one shard without a replica must not make every
        other shard's ends stop waiting."""
        shard = self.shard_of(keys[0])
        reply, waited = await node_round_trip(
            self.client.get_node_from_key(keys[0]),
            [("EVALSHA", APPEND.sha, len(keys), *keys, *argv), ("WAIT", shard.wanted, WAIT_MS)],
        )
        if isinstance(reply, ResponseError):
            # Moved (a failover, a resharding) or the script unknown there: the Cluster
            # client follows the redirect and loads the script; the end stays unconfirmed
            # and is waited for again on the next round.
            return (await APPEND(self.client, keys, argv))[:3], (False, shard)
        count = waited if isinstance(waited, int) else 0
        shard.acked(count)
        return reply[:3], (shard.confirms(count), shard)

    def shard_of(self, key: Any) -> Replication:
        """On Cluster: the replication of the shard that serves ``key``'s slot, as the
        client's slot map knows its replicas."""
        node = self.client.get_node_from_key(key)
        shard = self._shards.setdefault(node.name, Replication())
        nodes = self.client.nodes_manager.slots_cache.get(self.client.keyslot(key), [])
        shard.saw(max(1, len(nodes) - 1))  # master first
        return shard

    @staticmethod
    def _final(job: JobWrite, batch: Batch) -> bool:
        """Whether ``batch`` carries ``job``'s final event."""
        return batch.last == job.handed and bool(job.final_status)

    def _append_args(
        self, job: JobWrite, batch: Batch, now: float, *, hold: bool = False
    ) -> tuple[list[bytes], bytes]:
        """One batch's keys and argument in an append.lua call; ``hold``: a final batch is
        not published. The TTLs go with the first batch (it creates the log), the final one
        and, for a running job, once per :attr:`ttl_refresh_s`."""
        final = self._final(job, batch)
        ttl = 0
        if final:
            ttl = self.finished_ttl
        elif batch.first == 1 or now - job.ttl_sent >= self.ttl_refresh_s:
            ttl = self.running_ttl
            # Taken as sent: a batch that fails goes again with the next flush, and a
            # refresh that is lost leaves nine tenths of the TTL.
            job.ttl_sent = now
        head = b"%d %d %d %d %d" % (
            job.producer.epoch,
            batch.first,
            batch.last,
            ttl,
            0 if hold and final else 1,
        )
        if final:
            head += b" " + job.final_status.encode()
        return job.keys, head + b"\n" + batch.items

    async def _outcome(
        self,
        job: JobWrite,
        batch: Batch,
        reply: Any,
        acked: bool | None = None,
        replication: Replication | None = None,
    ) -> None:
        """Act on append.lua's answer to one batch; ``acked``: whether the replicas confirmed
        it (``None``: not waited for), under ``replication``."""
        code, seq, abort = int(reply[0]), int(reply[1]), int(reply[2])
        producer = job.producer
        if self.jobs.get(producer.job_id) is not job:
            return  # fenced while the batch was in flight
        if code in (0, 1):
            job.stored = max(job.stored, min(seq, job.handed))
        elif code == -1:
            job.repaired = bool(job.verify_until)
            await self._recreate(job)
            return
        elif code in (-2, -4):
            if job.verify_until:
                # Lost in a failover and continued by another producer before this one
                # could write it again: the case the check exists to make rare.
                log.warning("end of job %s was lost and the job taken over", producer.job_id)
                self.metrics.ends_unverified += 1
                self.forget(job)
                return
            log.warning("job %s was taken over by another instance", producer.job_id)
            self._on_fenced(job)
            return
        elif code == -3:
            # Redis lost the log's tail (failover, restart): resend from where it ends.
            if seq < job.stored:
                self.metrics.reconciled_events += job.stored - seq
                log.info(
                    "job %s: Redis holds its log up to event %d of %d; writing the rest again",
                    producer.job_id,
                    seq,
                    job.stored,
                )
            job.stored = seq
            job.repaired = bool(job.verify_until)
            return
        if abort and not producer.closed:
            self.metrics.aborts += 1
            producer.close_with("aborted", {}, reason="aborted")
        if producer.closed and job.final_status and job.stored >= job.handed:
            if job.verify_until:
                await self._verified(job, batch, acked)
                return
            now = time.monotonic()
            if acked is False and (replication or self.replication).patient(job.unconfirmed or now):
                # No replica has the end yet (a failover under way, or a replica behind):
                # keep the job and send its last batch again (idempotent) with another WAIT.
                job.unconfirmed = job.unconfirmed or now
                job.stored = batch.first - 1
                return
            if acked is not None:
                await self._publish(job, batch)
            if acked is False:
                # Taken as stored without a replica's copy (replication degraded): the end
                # is told and recorded, and the job stays here, checked until a replica has
                # it, so that a failover that loses it finds the events to write again
                # instead of a job left "running" at an earlier event (checker seed 2022).
                job.verify_until = now + self.verify_s
                job.release()
                log.warning(
                    "end of job %s (event %d) taken as stored without a replica's copy; "
                    "checking it for %.0f s",
                    producer.job_id,
                    job.handed,
                    self.verify_s,
                )
            else:
                self.forget(job)
            producer.final_stored = True
            self.metrics.jobs_finished += 1
            self._end(producer)

    async def _verified(self, job: JobWrite, batch: Batch, acked: bool | None) -> None:
        """An end under check was sent again: done once a replica has it; told and recorded
        again when Redis had lost part of it (the end's first telling was lost with it)."""
        if job.repaired:
            job.repaired = False
            self.metrics.ends_repaired += 1
            log.warning("end of job %s was lost by Redis and is written again", job.producer.job_id)
            if acked is not None:
                await self._publish(job, batch)
            self._end(job.producer)
        if acked is not False:
            self.forget(job)

    async def _publish(self, job: JobWrite, batch: Batch) -> None:
        """Tell subscribers the final batch (held back by append.lua until a replica had
        it), as append.lua would have. A subscriber that misses it finds the end when its
        silent subscription re-reads the log."""
        producer = job.producer
        message = b"[%d,%d,%s]" % (producer.epoch, batch.first, batch.items)
        try:
            # Recorded in the job hash as told: readers elsewhere follow the writer's word
            # (tell.lua) instead of judging the replicas by their own clock.
            await TELL(
                self.client, [self.keys.stream_job(producer.job_id)], [self.publish_cmd, message]
            )
            self.metrics.redis_round_trips += 1
        except Exception as exc:
            log.warning("publishing the end of job %s: %s", producer.job_id, exc)

    def _end(self, producer: Producer) -> None:
        """``producer``'s end is stored: its job leaves this instance's set, and the manager
        is told. The ends of one turn of the loop leave the set in one command: answers that
        end together (a burst of short ones) cost one round trip, not one each, and do not
        hold the loop while other answers stream."""
        if not self._ending:
            asyncio.get_running_loop().call_soon(self._end_all)
        self._ending.append(producer)

    def _end_all(self) -> None:
        ending, self._ending = self._ending, []
        if ending:
            self._background.spawn(self._ended(ending))

    async def _ended(self, producers: list[Producer]) -> None:
        # Recorded first, then out of the instance's set: should this instance die in
        # between, the reaper that claims its jobs finds the ended ones it had not recorded
        # and records them (``RedisStreamManager._claim``).
        ids = [p.job_id for p in producers]
        self.ending.update(ids)
        try:
            outcomes = await asyncio.gather(
                *(self._on_stored_end(producer) for producer in producers), return_exceptions=True
            )
            for producer, outcome in zip(producers, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    log.warning("end of job %s: %s", producer.job_id, outcome)
            with contextlib.suppress(Exception):
                await self.client.srem(self.keys.stream_instance_jobs(self.instance_id), *ids)
        finally:
            self.ending.difference_update(ids)

    async def _recreate(self, job: JobWrite) -> None:
        """The job hash is gone although the job runs here: Redis lost it. Create it again
        (empty, same epoch) and resend every event through append.lua."""
        producer = job.producer
        # Every batch in flight answers "vanished": one line for the job, not one per batch
        # (the first recreation sets ``stored`` to 0).
        log.log(
            logging.WARNING if job.stored else logging.DEBUG,
            "job %s vanished from Redis; writing its %d events again",
            producer.job_id,
            job.handed,
        )
        keys = self.keys
        await CREATE(
            self.client,
            [keys.stream_job(producer.job_id), keys.stream_log(producer.job_id)],
            [
                producer.owner,
                codec.dumps(producer.meta),
                self.instance_id,
                producer.created_at,
                self.running_ttl,
                producer.epoch,
                time.time(),
                int(self.records),
            ],
        )
        ttl = self.index_ttl
        await asyncio.gather(
            LISTED(
                self.client,
                [keys.stream_instance_jobs(self.instance_id)],
                [producer.job_id, "", ttl],
            ),
            LISTED(
                self.client,
                [keys.user_jobs(producer.owner)],
                [producer.job_id, producer.created_at, ttl],
            ),
        )
        self.metrics.redis_round_trips += 2
        self.metrics.reconciled_events += job.stored
        job.stored = 0
        self._kick.set()

    async def close(self) -> None:
        """Stop the timers, wait briefly for end handlers still running, and give the
        connection back (the writing task, :meth:`run`, must have ended)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._kick.set()
        self._end_all()
        await self._background.close(grace=2.0)
        if self._line is not None:
            await self._line.close()


def _batch(events: list[Event]) -> Batch:
    return Batch(
        int(events[0].id),
        int(events[-1].id),
        codec.dumps(codec.pack(events, final_text=False)),
    )
