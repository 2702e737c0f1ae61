"""``/metrics``: request latency by route, answer timings and upstream errors by model, process
metrics, no ``_created`` series, and label values that stay bounded whatever clients send."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatscale.config import load_settings
from tests.llm.fake_openai import FakeOpenAI
from tests.server.helpers import ServerThread, free_port, read_events

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "chatscale-dashboard.json"


def samples(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called ``name`` in a /metrics page."""
    return [
        dict(sample.labels)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name`` with ``labels`` (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and dict(sample.labels) == labels:
                return sample.value
    return 0.0


def exposed_names(text: str) -> set[str]:
    """Every series name a /metrics page declares, observed yet or not."""
    names: set[str] = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        name, kind = match.groups()
        suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
        names.update(name + suffix for suffix in suffixes)
    return names


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(tokens=5, delay=0.02) as server:
        yield server


@pytest.fixture
def served(upstream: FakeOpenAI) -> Iterator[ServerThread]:
    """Demo model at 200 tokens/s plus the fake upstream; only ``fake-1`` is configured
    (as DEFAULT_MODEL), so the upstream's other models share the ``other`` label."""
    settings = load_settings(
        demo_tokens_per_second=200,
        demo_response_tokens=20,
        openai_base_url=upstream.base_url,
        openai_api_key="sk-test",
        default_model="fake-1",
    )
    with ServerThread(settings) as server:
        yield server


async def _answer(client: httpx.AsyncClient, model: str) -> None:
    started = await client.post("/api/chat", json={"message": "hi", "model": model})
    assert started.status_code == 202, started.text
    await read_events(client, f"/api/chat/stream/{started.json()['stream_id']}")


async def test_no_created_series_and_process_metrics(served: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        await _answer(client, "demo")
        text = (await client.get("/metrics")).text
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert names and not {name for name in names if name.endswith("_created")}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert samples(text, name), name


async def test_request_latency_by_route_and_bounded_labels(served: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        await client.get("/healthz")
        for _ in range(60):
            ident = uuid.uuid4().hex
            await client.get(f"/api/chat/stream/{ident}/status")
            await client.get(f"/no/such/{ident}")
            await client.request("PROPFIND", f"/api/conversations/{ident}")
        text = (await client.get("/metrics")).text
    counts = samples(text, "chatscale_http_request_duration_seconds_count")
    routes = {labels["route"] for labels in counts}
    assert "/api/chat/stream/{stream_id}/status" in routes and "/healthz" in routes
    assert "unmatched" in routes
    assert not any(re.search(r"[0-9a-f]{32}", route) for route in routes)
    requests = samples(text, "chatscale_http_requests_total")
    assert {labels["method"] for labels in requests + counts} <= {"GET", "POST", "other"}
    # 180 distinct paths and an unusual method: a handful of series, not hundreds.
    assert len(counts) <= 6 and len(requests) <= 8
    status = "/api/chat/stream/{stream_id}/status"
    assert value(text, "chatscale_http_request_duration_seconds_count", route=status, method="GET")
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(text, "chatscale_http_requests_total", **unmatched)


async def test_route_labels_of_mounts_wrong_methods_and_early_refusals() -> None:
    """The label is the route the router chose: Durable Streams requests get the protocol's
    path template, static files their mount's, a method its path has no route for is
    ``unmatched``; a request refused before routing (its declared body too large) still
    gets its route's template."""
    settings = load_settings(
        durable_streams=True, durable_streams_auth="none", max_request_body_bytes=1024
    )
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            plain = {"Content-Type": "text/plain"}
            assert (await client.put("/v1/stream/s1", headers=plain)).status_code == 201
            appended = await client.post("/v1/stream/s1", content=b"x", headers=plain)
            assert appended.status_code == 204
            refused = await client.post("/v1/stream/s1", content=b"x", headers={})
            assert refused.status_code == 400
            assert (await client.get("/static/app.js")).status_code == 200
            assert (await client.post("/api/chat/active")).status_code == 405
            rename = await client.patch("/api/conversations/c1", json={"title": "t"})
            too_large = await client.post("/api/chat/stream/s1/abort", content=b"x" * 2048)
            assert too_large.status_code == 413
            text = (await client.get("/metrics")).text
    total = "chatscale_http_requests_total"
    durable = "/v1/stream/{name}"
    assert value(text, total, route=durable, method="PUT", status="201") == 1
    assert value(text, total, route=durable, method="POST", status="204") == 1
    assert value(text, total, route=durable, method="POST", status="400") == 1
    assert value(text, total, route="/static/{path}", method="GET", status="200") == 1
    assert value(text, total, route="unmatched", method="POST", status="405") == 1
    renamed = {"route": "/api/conversations/{conversation_id}", "method": "PATCH"}
    assert value(text, total, **renamed, status=str(rename.status_code)) == 1
    abort = "/api/chat/stream/{stream_id}/abort"
    assert value(text, total, route=abort, method="POST", status="413") == 1


async def test_answer_timings_and_upstream_errors_by_configured_model(
    served: ServerThread,
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as client:
        await _answer(client, "demo")
        await _answer(client, "fake-1")
        await _answer(client, "fake-cut")
        await _answer(client, "fake-500")
        text = (await client.get("/metrics")).text
    ttft = "chatscale_llm_time_to_first_token_seconds_count"
    tps = "chatscale_llm_tokens_per_second_count"
    assert value(text, ttft, model="demo") == 1 and value(text, tps, model="demo") == 1
    assert value(text, ttft, model="fake-1") == 1 and value(text, tps, model="fake-1") == 1
    # Models the settings do not name share one label; unfinished answers have no rate.
    assert value(text, ttft, model="other") == 1 and value(text, tps, model="other") == 0
    assert {labels["model"] for labels in samples(text, ttft)} == {"demo", "fake-1", "other"}
    errors = "chatscale_upstream_errors_total"
    assert value(text, errors, model="other", kind="cut_off") == 1
    assert value(text, errors, model="other", kind="http_5xx") == 1
    assert len(samples(text, errors)) == 2


async def test_unreachable_upstream_counts_connection_errors() -> None:
    settings = load_settings(
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        openai_models=("local-model",),
    )
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            await _answer(client, "local-model")
            text = (await client.get("/metrics")).text
    assert value(text, "chatscale_upstream_errors_total", model="local-model", kind="connection")


async def test_grafana_dashboard_queries_only_exposed_metrics(served: ServerThread) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 8
    queried = {
        name
        for expr in exprs
        for name in re.findall(r"\b((?:chatscale|process|python)_[a-z0-9_]+)", expr)
    }
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        text = (await client.get("/metrics")).text
    assert queried and queried <= exposed_names(text), queried - exposed_names(text)
    # Every new family is on the dashboard.
    for family in (
        "chatscale_http_request_duration_seconds_bucket",
        "chatscale_llm_time_to_first_token_seconds_bucket",
        "chatscale_llm_tokens_per_second_bucket",
        "chatscale_upstream_errors_total",
        "process_cpu_seconds_total",
    ):
        assert family in queried


def test_request_counts_expose_what_prometheus_clients_instruments_would() -> None:
    """The request metrics are counted in plain numbers (chatscale.server.metrics
    .RequestCounts); their exposition is that of a Counter and a Histogram given the same
    requests, bucket edges and sums included."""
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Histogram,
        disable_created_metrics,
        generate_latest,
    )

    from chatscale.server.metrics import _LATENCY_BUCKETS, RequestCounts

    disable_created_metrics()  # as ServerMetrics does
    theirs = CollectorRegistry()
    counter = Counter(
        "chatscale_http_requests",
        "HTTP requests by route, method and status",
        ["route", "method", "status"],
        registry=theirs,
    )
    histogram = Histogram(
        "chatscale_http_request_duration_seconds",
        "time to the response's headers by route template and method "
        "(for event streams: time to open the stream)",
        ["route", "method"],
        buckets=_LATENCY_BUCKETS,
        registry=theirs,
    )
    ours = CollectorRegistry()
    counts = RequestCounts()
    ours.register(counts)
    requests = [
        ("/api/chat", "POST", 202, 0.0004),
        ("/api/chat", "POST", 202, 0.001),  # on a bucket's edge
        ("/api/chat", "POST", 429, 0.03),
        ("/v1/stream/{name}", "GET", 200, 12.0),  # past the last bucket
        ("/v1/stream/{name}", "PUT", 201, 0.0025),
        ("unmatched", "other", 404, 0.2),
    ]
    for route, method, status, seconds in requests:
        counter.labels(route, method, str(status)).inc()
        histogram.labels(route, method).observe(seconds)
        counts.add(route, method, status, seconds)
    assert generate_latest(ours).decode() == generate_latest(theirs).decode()
    assert counts.count("/api/chat", "POST", 202) == 2
