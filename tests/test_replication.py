"""The rule for writes that must survive a failover (:mod:`chatscale.redis.replication`)."""

from __future__ import annotations

import time

from chatscale.redis.replication import CONFIRM_S, RECENT_S, Replication


def test_no_wait_before_any_replica_was_seen() -> None:
    replication = Replication()
    assert not replication.waits
    replication.saw(0)
    assert not replication.waits
    replication.saw(2)
    replication.saw(0)  # a master being failed over reports 0: still waited for
    assert replication.waits and replication.seen == 2


def test_an_unconfirmed_write_is_sent_again_for_a_bounded_time() -> None:
    replication = Replication()
    replication.saw(1)
    now = time.monotonic()
    replication.acked(0)
    assert replication.patient(now)
    assert not replication.patient(now - CONFIRM_S - 0.1)


def test_replication_degrades_after_a_whole_bound_without_acks_and_recovers() -> None:
    replication = Replication()
    replication.saw(1)
    replication.acked(0)
    assert not replication.degraded
    assert replication.unconfirmed_since is not None
    replication.unconfirmed_since -= CONFIRM_S  # no acknowledgement for the whole bound
    assert replication.degraded
    # A write is sent once (its WAIT still asks whether a replica is back) ...
    assert not replication.patient(time.monotonic())
    replication.acked(0)
    assert replication.degraded  # more zeros do not restart the clock
    # ... until one is acknowledged.
    replication.acked(1)
    assert not replication.degraded and replication.patient(time.monotonic())


def test_a_write_waits_for_every_replica_the_master_had_lately() -> None:
    """With two replicas one copy is not enough: a failover may promote the other one
    (checker sentinel-ha seed 2020)."""
    replication = Replication()
    assert replication.wanted == 1
    replication.saw(2)
    assert replication.wanted == 2
    assert not replication.confirms(1) and replication.confirms(2)
    replication.saw(1)  # one is being promoted: the write must still reach both
    assert replication.wanted == 2
    replication.acked(1)
    assert replication.unconfirmed_since is not None


def test_a_replica_gone_for_long_is_no_longer_waited_for() -> None:
    replication = Replication()
    replication.saw(2)
    replication._recent[0] = (time.monotonic() - RECENT_S - 1, 2)
    replication.saw(1)
    assert replication.wanted == 1
    assert replication.waits  # still waited for: one replica


def test_a_new_master_counts_its_replicas_afresh() -> None:
    replication = Replication()
    replication.saw(2)
    replication.master_moved()
    assert replication.wanted == 1
    replication.saw(0)  # just promoted: none yet
    assert replication.wanted == 1
    replication.saw(2)
    assert replication.wanted == 2
