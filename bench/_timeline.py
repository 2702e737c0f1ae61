"""Latency over time for the streams benchmark: per-bucket percentiles, GC pauses, loop lag.

The consumers only append numbers while a run is measured (arrival and latency of every
delivery); :func:`bucket_latencies` groups them into buckets of arrival time afterwards.
:class:`GcPauses` and :class:`LoopLag` record what else may stall the one event loop:
garbage-collector runs (``gc.callbacks``) and how late a timer fires (a low-rate sampler).
Every time is in microseconds of the benchmark's clock (``bench._common.now_us``) and is
reported as seconds since ``origin_us``, the moment the producers were released.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from bench._common import now_us, percentile

BUCKET_MS = 100
LAG_INTERVAL_MS = 50


def bucket_latencies(
    arrivals_us: list[int], latencies_us: list[int], origin_us: int, bucket_ms: int = BUCKET_MS
) -> dict[str, Any]:
    """Deliveries grouped by arrival time: count, nearest-rank p50 and p99, and max per bucket.

    ``arrivals_us[i]`` is when delivery ``i`` arrived and ``latencies_us[i]`` its latency.
    Bucket ``k`` holds arrivals in ``[origin + k * bucket, origin + (k + 1) * bucket)``; every
    bucket from the first to the last non-empty one is listed (empty ones with ``n`` 0 and
    null latencies), so ``t_s`` is evenly spaced. Arrivals before ``origin_us`` (none in a
    paced run) go to bucket 0.
    """
    if len(arrivals_us) != len(latencies_us):
        raise ValueError(f"{len(arrivals_us)} arrivals but {len(latencies_us)} latencies")
    width_us = bucket_ms * 1000
    groups: dict[int, list[int]] = {}
    for arrived, latency in zip(arrivals_us, latencies_us, strict=True):
        groups.setdefault(max(0, (arrived - origin_us) // width_us), []).append(latency)
    last = max(groups, default=-1)
    out: dict[str, Any] = {
        "bucket_ms": bucket_ms,
        "t_s": [],
        "n": [],
        "p50_ms": [],
        "p99_ms": [],
        "max_ms": [],
    }
    for index in range(last + 1):
        values = sorted(groups.get(index, ()))
        out["t_s"].append(round(index * bucket_ms / 1000, 3))
        out["n"].append(len(values))
        out["p50_ms"].append(round(percentile(values, 50) / 1000, 3) if values else None)
        out["p99_ms"].append(round(percentile(values, 99) / 1000, 3) if values else None)
        out["max_ms"].append(round(values[-1] / 1000, 3) if values else None)
    return out


class GcPauses:
    """Every collection of the cyclic garbage collector between :meth:`start` and :meth:`stop`:
    when it began (s since the origin), how long it took (ms) and its generation."""

    def __init__(self, origin_us: int) -> None:
        self._origin_us = origin_us
        self._began_us = 0
        self._starts: list[int] = []
        self._durations: list[int] = []
        self._generations: list[int] = []

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began_us = now_us()
        else:
            self._starts.append(self._began_us)
            self._durations.append(now_us() - self._began_us)
            self._generations.append(info["generation"])

    def start(self) -> None:
        """Begin recording."""
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        """Stop recording (idempotent)."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def report(self) -> dict[str, Any]:
        """``t_s``, ``ms`` and ``gen`` of every pause (parallel lists) and totals by generation."""
        totals: dict[str, float] = {}
        for generation, duration in zip(self._generations, self._durations, strict=True):
            key = str(generation)
            totals[key] = totals.get(key, 0.0) + duration / 1000
        return {
            "t_s": [round((s - self._origin_us) / 1e6, 4) for s in self._starts],
            "ms": [round(d / 1000, 3) for d in self._durations],
            "gen": list(self._generations),
            "total_ms": {k: round(v, 3) for k, v in sorted(totals.items())},
        }


class LoopLag:
    """How late the event loop runs a timer: one sample every ``interval_ms``.

    A sample is a ``call_later`` callback that notes how long after its due time it ran and
    schedules the next one; between samples it costs nothing (no task, no thread).
    """

    def __init__(self, origin_us: int, interval_ms: int = LAG_INTERVAL_MS) -> None:
        self._origin_us = origin_us
        self._interval_us = interval_ms * 1000
        self._due_us = 0
        self._handle: asyncio.TimerHandle | None = None
        self._dues: list[int] = []
        self._lags: list[int] = []

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due_us = now_us() + self._interval_us
        self._handle = loop.call_later(self._interval_us / 1e6, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._dues.append(self._due_us)
        self._lags.append(now_us() - self._due_us)
        self._schedule(loop)

    def start(self) -> None:
        """Begin sampling on the running loop."""
        self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        """Stop sampling (idempotent)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def report(self) -> dict[str, Any]:
        """``t_s`` (when each sample was due, s since the origin) and ``lag_ms`` (parallel)."""
        return {
            "interval_ms": self._interval_us // 1000,
            "t_s": [round((d - self._origin_us) / 1e6, 4) for d in self._dues],
            "lag_ms": [round(lag / 1000, 3) for lag in self._lags],
        }


class Recording:
    """GC pauses and loop lag from ``origin_us`` until the ``with`` block ends."""

    def __init__(self, origin_us: int) -> None:
        self.origin_us = origin_us
        self.gc_pauses = GcPauses(origin_us)
        self.loop_lag = LoopLag(origin_us)

    def __enter__(self) -> Recording:
        self.gc_pauses.start()
        self.loop_lag.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gc_pauses.stop()
        self.loop_lag.stop()

    def report(self, arrivals_us: list[int], latencies_us: list[int]) -> dict[str, Any]:
        """The ``timeline``, ``gc_pauses`` and ``loop_lag`` fields of a run's result."""
        return {
            "timeline": bucket_latencies(arrivals_us, latencies_us, self.origin_us),
            "gc_pauses": self.gc_pauses.report(),
            "loop_lag": self.loop_lag.report(),
        }
