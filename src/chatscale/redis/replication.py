"""Writes that must survive a failover: a WAIT for a replica's copy, with bounded patience.

Replication is asynchronous: a write a master acknowledged and then lost its role with (a
Sentinel failover, a former master still answering while the new one takes over) is gone.
For the few writes whose loss a user would see (a stream's end, an answer recorded in its
conversation), the write is followed on the same connection by ``WAIT 1``: when no replica
has it, it is sent again (every such write is idempotent) until one has, or until
:data:`CONFIRM_S` passed. That bound exists because a failover leaves the new master without
a replica until another one (or the former master) attaches, and a replica down for long
must not keep answers unrecorded.
"""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError

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

    def saw(self, count: int) -> None:
        """The master reports ``count`` connected replicas."""
        self.seen = max(self.seen, count)

    @property
    def waits(self) -> bool:
        """Whether writes that must survive a failover wait for a replica."""
        return self.seen > 0
