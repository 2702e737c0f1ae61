"""Latency over time (bench/_timeline.py): buckets computed by hand, GC pauses, loop lag."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from bench._timeline import GcPauses, LoopLag, bucket_latencies

ORIGIN = 1_000_000


def test_buckets_by_arrival_with_nearest_rank_percentiles() -> None:
    arrivals = [1_000_000, 1_050_000, 1_099_999, 1_100_000, 1_350_000, 999_000]
    latencies = [1_000, 3_000, 2_000, 5_000, 7_000, 4_000]
    timeline = bucket_latencies(arrivals, latencies, ORIGIN)
    # Bucket 0 holds 1.0, 3.0, 2.0 ms and the early arrival's 4.0 ms: sorted 1, 2, 3, 4;
    # nearest rank: p50 is the 2nd value, p99 the 4th. 1,100,000 opens bucket 1; bucket 2
    # is empty; 1,350,000 falls in bucket 3.
    assert timeline == {
        "bucket_ms": 100,
        "t_s": [0.0, 0.1, 0.2, 0.3],
        "n": [4, 1, 0, 1],
        "p50_ms": [2.0, 5.0, None, 7.0],
        "p99_ms": [4.0, 5.0, None, 7.0],
        "max_ms": [4.0, 5.0, None, 7.0],
    }


def test_p99_of_a_hundred_deliveries_is_the_99th() -> None:
    latencies = [ms * 1000 for ms in range(100, 0, -1)]  # 100 ms .. 1 ms, unsorted
    arrivals = [ORIGIN + 10_000 + i for i in range(100)]
    timeline = bucket_latencies(arrivals, latencies, ORIGIN, bucket_ms=50)
    assert timeline["bucket_ms"] == 50
    assert timeline["n"] == [100]
    assert (timeline["p50_ms"], timeline["p99_ms"], timeline["max_ms"]) == ([50.0], [99.0], [100.0])


def test_no_deliveries_and_mismatched_lists() -> None:
    assert bucket_latencies([], [], ORIGIN)["t_s"] == []
    with pytest.raises(ValueError, match="2 arrivals but 1 latencies"):
        bucket_latencies([ORIGIN, ORIGIN], [5], ORIGIN)


def test_gc_pauses_records_a_full_collection_only_while_started() -> None:
    pauses = GcPauses(time.monotonic_ns() // 1000)
    gc.collect()  # before start: not recorded
    pauses.start()
    gc.collect()
    pauses.stop()
    gc.collect()  # after stop: not recorded
    report = pauses.report()
    assert report["gen"] == [2]
    assert report["t_s"][0] >= 0 and report["ms"][0] >= 0
    assert report["total_ms"] == {"2": report["ms"][0]}


async def test_loop_lag_sees_a_blocked_loop() -> None:
    lag = LoopLag(time.monotonic_ns() // 1000, interval_ms=10)
    lag.start()
    await asyncio.sleep(0.05)
    # Blocking the loop is the point: the sample due meanwhile runs about 100 ms late.
    time.sleep(0.1)  # noqa: ASYNC251
    await asyncio.sleep(0.05)
    lag.stop()
    report = lag.report()
    assert report["interval_ms"] == 10
    assert len(report["t_s"]) == len(report["lag_ms"]) >= 5
    assert max(report["lag_ms"]) >= 80
    assert report["t_s"] == sorted(report["t_s"])
