"""Writes that must survive a failover: a WAIT for a replica's copy, with bounded patience.

Replication is asynchronous: a write a master acknowledged and then lost its role with (a
Sentinel failover, a former master still answering while the new one takes over) is gone.
For the few writes whose loss a user would see (a stream's end, a message or an answer
recorded in its conversation, a new session: losing it loses the way back to one's
conversations), the write is followed on the same connection by ``WAIT 1``:
when no replica has it, it is sent again (every such write is idempotent) until one has, or
until :data:`CONFIRM_S` passed. That bound exists because a failover leaves the new master
without a replica until another one (or the former master) attaches, and a replica down for
long must not keep answers unrecorded. Once no WAIT at all was acknowledged for
:data:`CONFIRM_S`, replication counts as degraded: a write is sent once, with one WAIT, and
taken as stored whatever it answers, instead of each write paying the whole bound; the first
acknowledgement ends the degraded state. (That WAIT keeps its full length: with a 1 ms one, a
busy but healthy replica answered too late, replication stayed "degraded", ends went
unconfirmed, and one lost in a failover ran again: the fault checker's seed 2037.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)

#: How long one WAIT for a replica lasts (milliseconds).
WAIT_MS = 100
#: How long (seconds) a write may stay unconfirmed, round after round, before it is taken
#: as stored anyway.
CONFIRM_S = 5.0


class NotReplicated(RedisConnectionError):
    """No replica confirmed a write (a failover may be under way): send it again."""


class Replication:
    """What this process has seen of the master's replicas (outside Cluster, whose nodes
    are not waited for), fed by the stream heartbeat's ``INFO replication``."""

    def __init__(self) -> None:
        #: The most replicas ever seen, not the current count: a master being failed over
        #: has just lost its replica (it reports 0), and that is exactly when a write must
        #: be waited for.
        self.seen = 0
        #: Since when (``time.monotonic``) no WAIT was acknowledged; ``None``: the last was.
        self.unconfirmed_since: float | None = None

    def saw(self, count: int) -> None:
        """The master reports ``count`` connected replicas."""
        self.seen = max(self.seen, count)

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
        if replicas > 0:
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
            pipe.execute_command("WAIT", 1, WAIT_MS)
            reply, acked = await pipe.execute()
        attempts.append(reply)
        replication.acked(acked)
        if acked:
            return attempts
        if not replication.patient(since):
            log.warning("no replica confirmed %s", what)
            return attempts
