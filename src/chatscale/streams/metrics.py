"""Counters and gauges of one stream manager (the server maps them to Prometheus)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class StreamMetrics:
    """Plain attributes, updated in place; read them whenever you like.

    Gauges: ``jobs_active`` (jobs this instance produces now), ``subscribers`` (open
    subscriptions on this instance). Everything else only grows.
    """

    jobs_active: int = 0
    subscribers: int = 0
    jobs_created: int = 0
    jobs_finished: int = 0
    chunks: int = 0
    events_appended: int = 0
    events_delivered: int = 0
    replays: int = 0
    replayed_events: int = 0
    resume_hits: int = 0
    resume_misses: int = 0
    subscriber_overflows: int = 0
    takeovers: int = 0
    aborts: int = 0
    redis_round_trips: int = 0
    reconciled_events: int = 0
    read_retries: int = 0
    ends_repaired: int = 0
    ends_unverified: int = 0

    def snapshot(self) -> dict[str, int]:
        """All values as a plain dict."""
        return asdict(self)
