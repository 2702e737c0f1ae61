"""Writes that must survive a failover: a WAIT for the replicas' copies, with bounded
patience.

Replication is asynchronous: a write a master acknowledged and then lost its role with (a
Sentinel failover, a former master still answering while the new one takes over) is gone.
For the few writes whose loss a user would see (a stream's end, a message or an answer
recorded in its conversation, a new session: losing it loses the way back to one's
conversations), the write is followed on the same connection by a ``WAIT`` for every
replica the master had lately (:attr:`Replication.wanted`): when not all have it, it is sent
again (every such write is idempotent) until they have, or until :data:`CONFIRM_S` passed.

One replica's copy is not enough when there are several: a failover may promote another
one, and the first then resynchronises from it and drops the write. (With two replicas,
one of them not promotable, a former master back from a pause took writes for a second that
its unpromotable replica confirmed while the other was being promoted; every instance then
found its finished jobs running again and took them back: the fault checker's sentinel-ha
seed 2020.)

The bound exists because a failover leaves the new master without a replica until another
one (or the former master) attaches, and a replica down for long must not keep answers
unrecorded. Once no WAIT was confirmed for :data:`CONFIRM_S`, replication counts as
degraded: a write is sent once, with one WAIT, and taken as stored whatever it answers,
instead of each write paying the whole bound; the first confirmation ends the degraded
state. (That WAIT keeps its full length: with a 1 ms one, a busy but healthy replica
answered too late, replication stayed "degraded", ends went unconfirmed, and one lost in a
failover ran again: the fault checker's seed 2037.) A stream's end taken as stored that way
stays under check by its producer (:mod:`chatscale.streams.redis_writer`).

A WAIT also covers the writes other connections made before it: Redis 7.0 sets a client's
wait offset to the master's replication offset after each of its commands, so a resent
write that changes nothing (already stored) still waits for everything before it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)

#: How long one WAIT for a replica lasts (milliseconds).
WAIT_MS = 100
#: How long (seconds) a write may stay unconfirmed, round after round, before it is taken
#: as stored anyway.
CONFIRM_S = 5.0
#: How long (seconds) a replica the master reported counts among those a write waits for
#: (a replica gone for longer no longer holds every write up).
RECENT_S = 30.0


class NotReplicated(RedisConnectionError):
    """No replica confirmed a write (a failover may be under way): send it again."""


class Replication:
    """What this process has seen of the master's replicas, fed by the stream heartbeat's
    ``INFO replication`` (on Cluster, one per shard, fed by the writer)."""

    def __init__(self) -> None:
        #: The most replicas ever seen, not the current count: a master being failed over
        #: has just lost its replica (it reports 0), and that is exactly when a write must
        #: be waited for.
        self.seen = 0
        #: Since when (``time.monotonic``) no WAIT was acknowledged; ``None``: the last was.
        self.unconfirmed_since: float | None = None
        #: The replica counts reported within :data:`RECENT_S`, as (``time.monotonic``,
        #: count), the newest last and each count higher than the ones after it.
        self._recent: deque[tuple[float, int]] = deque()

    def saw(self, count: int) -> None:
        """The master reports ``count`` connected replicas."""
        self.seen = max(self.seen, count)
        now = time.monotonic()
        recent = self._recent
        while recent and (recent[-1][1] <= count or now - recent[0][0] > RECENT_S):
            if recent[-1][1] <= count:
                recent.pop()
            else:
                recent.popleft()
        recent.append((now, count))

    def master_moved(self) -> None:
        """A new master: its replicas are counted afresh (the former master's are now its
        replicas or gone; waiting for as many would hold every write for the bound)."""
        self._recent.clear()

    @property
    def wanted(self) -> int:
        """How many replicas a WAIT asks for: every one the master had within
        :data:`RECENT_S` (a master being failed over reports fewer), at least one."""
        now = time.monotonic()
        recent = self._recent
        while len(recent) > 1 and now - recent[0][0] > RECENT_S:
            recent.popleft()
        return max(1, recent[0][1] if recent else 1)

    def confirms(self, replicas: int) -> bool:
        """Whether a WAIT answered by ``replicas`` confirms a write."""
        return replicas >= self.wanted

    @property
    def waits(self) -> bool:
        """Whether writes that must survive a failover wait for a replica."""
        return self.seen > 0

    @property
    def degraded(self) -> bool:
        """Whether no WAIT has been acknowledged for :data:`CONFIRM_S`."""
        since = self.unconfirmed_since
        return since is not None and time.monotonic() - since >= CONFIRM_S

    def acked(self, replicas: int) -> None:
        """A WAIT answered: ``replicas`` have the write."""
        if self.confirms(replicas):
            self.unconfirmed_since = None
        elif self.unconfirmed_since is None:
            self.unconfirmed_since = time.monotonic()

    def patient(self, since: float) -> bool:
        """Whether a write unconfirmed since ``since`` (``time.monotonic``) is sent again."""
        return not self.degraded and time.monotonic() - since < CONFIRM_S


#: One idempotent write: run on the client (the reply), or queued on a pipeline.
Queue = Callable[[Any], Awaitable[Any]]


async def write_durably(
    client: Any, replication: Replication, queue: Queue, what: str
) -> list[Any]:
    """Run the idempotent write ``queue``; when the master has replicas, queued on a pipeline
    followed by a WAIT on the same connection, and sent again until a replica has it (within
    :meth:`Replication.patient`). The replies of every attempt, in order."""
    if not replication.waits:
        return [await queue(client)]
    attempts: list[Any] = []
    since = time.monotonic()
    while True:
        async with client.pipeline(transaction=False) as pipe:
            await queue(pipe)
            pipe.execute_command("WAIT", replication.wanted, WAIT_MS)
            reply, acked = await pipe.execute()
        attempts.append(reply)
        replication.acked(acked)
        if replication.confirms(acked):
            return attempts
        if not replication.patient(since):
            log.warning("no replica confirmed %s", what)
            return attempts
