"""Which Redis failures a retry gets past: one list for every retry loop that must survive
a restart or a failover.

Besides a lost connection and a timeout, a topology changing under a command answers it
with an error reply that a moment later will not come again: a Cluster whose slot has no
master for the few seconds of its failover (``CLUSTERDOWN``), a slot being moved
(``TRYAGAIN``), a master demoted to a replica (``READONLY``), a replica still loading or
without its master (``LOADING``, ``MASTERDOWN``). redis-py retries some of these itself, a
bounded number of times (``REDIS_RETRY_MAX_ATTEMPTS``, a quarter of a second apart on
Cluster), which a failover can outlast.
"""

from __future__ import annotations

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Failures of a Redis command that a retry of the same command gets past.
TRANSIENT_REDIS_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,  # asyncio's, from a deadline around the command
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
    ReadOnlyError,
    BusyLoadingError,
    MasterDownError,
)
