"""Prometheus metrics of one application (its own registry, so several apps can coexist)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatscale.streams import StreamMetrics

# Counters of the stream manager, exported as ``chatscale_streams_<name>_total``.
_STREAM_COUNTERS = {
    "jobs_created": "generation jobs started on this instance",
    "jobs_finished": "generation jobs ended on this instance",
    "chunks": "text chunks produced",
    "events_delivered": "events delivered to subscribers",
    "replays": "subscriptions that replayed stored events",
    "resume_hits": "subscriptions resumed after an event id",
    "resume_misses": "resumes refused (event id not in the log)",
    "takeovers": "jobs continued after their producer died",
    "aborts": "jobs aborted",
    "subscriber_overflows": "subscribers dropped for falling behind",
    "redis_round_trips": "Redis round trips of the stream manager",
    "read_retries": "stream reads retried after a transient Redis failure",
}


class _StreamCollector(Collector):
    def __init__(self, metrics: Callable[[], StreamMetrics | None], sse: Callable[[], int]):
        self._metrics = metrics
        self._sse = sse

    def collect(self) -> Iterator[Any]:
        open_sse = GaugeMetricFamily("chatscale_sse_connections", "open event streams")
        open_sse.add_metric([], self._sse())
        yield open_sse
        metrics = self._metrics()
        if metrics is None:
            return
        values = metrics.snapshot()
        active = GaugeMetricFamily("chatscale_streams_active", "jobs produced by this instance")
        active.add_metric([], values.get("jobs_active", 0))
        yield active
        subscribers = GaugeMetricFamily("chatscale_streams_subscribers", "open subscriptions")
        subscribers.add_metric([], values.get("subscribers", 0))
        yield subscribers
        for name, help_text in _STREAM_COUNTERS.items():
            family = CounterMetricFamily(f"chatscale_streams_{name}", help_text)
            family.add_metric([], values.get(name, 0))
            yield family


class ServerMetrics:
    """The application's registry and its instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "chatscale_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.chats = Counter("chatscale_chats_started", "chats started", registry=self.registry)
        self.rejected = Counter(
            "chatscale_chats_rejected",
            "chats refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.sse_resumes = Counter(
            "chatscale_sse_resumes",
            "event streams opened with Last-Event-ID or ?after",
            registry=self.registry,
        )
        self.redis_latency = Histogram(
            "chatscale_redis_ping_seconds",
            "Redis PING round trip",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.open_sse = 0

    def watch_streams(self, metrics: Callable[[], StreamMetrics | None]) -> None:
        """Export the stream manager's counters at scrape time."""
        self.registry.register(_StreamCollector(metrics, lambda: self.open_sse))


class RequestMetricsMiddleware:
    """Counts requests by route template (not raw path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(
                _route(scope), scope.get("method", ""), str(status["code"])
            ).inc()


def _route(scope: Scope) -> str:
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"
