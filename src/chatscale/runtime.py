"""Process-wide tuning that ``chatscale serve`` applies once the server is built.

A streaming server allocates many short-lived container objects per token (futures,
handles, event tuples). With CPython's default threshold (a young-generation collection
every 700 net allocations) the collector promotes objects that would have died a few
milliseconds later, and the older generations' collections then walk every long-lived
object: on the streams benchmark's workload b, 20 % of the process's CPU went to the
collector and its full collections paused the event loop for 50-90 ms about once a second
(docs/benchmarks.md, "Latency over time").
"""

from __future__ import annotations

import gc

#: Net container allocations between two young-generation collections (CPython: 700).
DEFAULT_GC_THRESHOLD = 20_000


def tune_gc(threshold: int = DEFAULT_GC_THRESHOLD) -> None:
    """Freeze what exists now (modules, settings, the app: never garbage, never walked
    again by a collection) and collect the young generation every ``threshold`` net
    allocations; the older generations keep CPython's ratios. ``threshold`` 0 leaves the
    collector as it is.

    Call it once, after start-up and before serving. Reference cycles live a little
    longer before they are collected; objects freed by reference counting (nearly all)
    are not affected.
    """
    if threshold <= 0:
        return
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)
