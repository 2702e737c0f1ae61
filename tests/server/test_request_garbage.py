"""An answered request leaves nothing for the garbage collector: what the server built for it
is freed by reference counting when it ends. A reference cycle per request (the server's
``send`` kept in the scope did that) left a dozen objects per request to the collector,
whose passes were then most of its cost under load (docs/benchmarks.md, Durable Streams)."""

from __future__ import annotations

import gc
import http.client
import time

import httpx
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from chatscale.config import load_settings
from chatscale.server.sse import EventStream
from tests.server.helpers import ServerThread

BASE = "/v1/stream"


def _alive(kind: type) -> int:
    return sum(isinstance(o, kind) for o in gc.get_objects())


def test_answered_requests_leave_no_reference_cycle() -> None:
    settings = load_settings(durable_streams=True, durable_streams_auth="none")
    requests = [
        ("PUT", f"{BASE}/garbage", b"", {"Content-Type": "text/plain"}),
        *[("POST", f"{BASE}/garbage", b"x" * 64, {"Content-Type": "text/plain"})] * 20,
        ("POST", f"{BASE}/garbage", b"[1]", {"Content-Type": "application/json"}),  # a 409
        ("GET", f"{BASE}/garbage?offset=-1", b"", {}),
        ("HEAD", f"{BASE}/garbage", b"", {}),
        ("GET", "/readyz", b"", {}),
        ("GET", "/openapi.json", b"", {}),
        ("GET", "/api/no-such-route", b"", {}),
    ]
    with ServerThread(settings) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        gc.collect()
        gc.disable()
        try:
            statuses = []
            for method, path, body, headers in requests:
                connection.request(method, path, body=body, headers=headers)
                answer = connection.getresponse()
                answer.read()
                statuses.append(answer.status)
            # The last answer is out before its request has quite ended on the server.
            deadline = time.monotonic() + 5
            while _alive(RequestResponseCycle) > 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            alive = _alive(RequestResponseCycle)
        finally:
            gc.enable()
            connection.close()
    assert statuses[:2] == [201, 204] and statuses[21] == 409 and statuses[-1] == 404
    # The kept-alive connection holds its last request's cycle; every other one is freed.
    assert alive <= 1, f"{alive} request cycles wait for the garbage collector"


def test_answered_chats_leave_no_reference_cycle() -> None:
    # The chat's event stream, its pump task and the answer's objects; a class made per
    # response (one was) is itself a cycle and held them all.
    settings = load_settings(demo_response_tokens=5, demo_tokens_per_second=1000)
    with ServerThread(settings) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        gc.collect()
        gc.disable()
        try:
            texts = []
            for _ in range(5):
                started = client.post("/api/chat", json={"message": "hi"}).json()
                with client.stream("GET", f"/api/chat/stream/{started['stream_id']}") as answer:
                    texts.append("".join(answer.iter_text()))
            deadline = time.monotonic() + 5
            while _alive(EventStream) > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            alive = _alive(EventStream)
        finally:
            gc.enable()
    assert all("event: done" in text for text in texts), texts
    assert alive == 0, f"{alive} event streams wait for the garbage collector"
