"""SIGTERM ends the protocol's live reads at once (a rolling restart must not wait for SSE
readers' 60 s): the reader gets what was appended, then the connection ends, and the
process exits."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.server.procs import ServeProcess

TOKEN = "drain-test-token-0123456789"


@pytest.mark.slow
def test_sigterm_ends_sse_and_long_poll(tmp_path: Path) -> None:
    env = {
        "DURABLE_STREAMS": "true",
        "DURABLE_STREAMS_WRITE_TOKENS": TOKEN,
        "DURABLE_STREAMS_LONG_POLL_TIMEOUT": "60",
        "STREAM_DRAIN_TIMEOUT": "5",
    }
    serve = ServeProcess(env, tmp_path / "serve.log").start()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"}
    url = f"{serve.url}/v1/stream/live"
    try:
        created = httpx.put(url, headers=headers, content=b"first")
        tail = created.headers["stream-next-offset"]
        polled: list[httpx.Response] = []
        poller = threading.Thread(
            target=lambda: polled.append(
                httpx.get(
                    url, headers=headers, params={"offset": tail, "live": "long-poll"}, timeout=30
                )
            )
        )
        poller.start()
        with httpx.stream(
            "GET", url, headers=headers, params={"offset": "-1", "live": "sse"}, timeout=30
        ) as sse:
            chunks = sse.iter_text()
            assert "first" in next(chunks)
            time.sleep(0.3)
            started = time.monotonic()
            serve.signal(signal.SIGTERM)
            rest = "".join(chunks)  # ends when the server ends the stream
            assert time.monotonic() - started < 10
        assert "event: data" not in rest
        poller.join(10)
        assert polled and polled[0].status_code == 204
        assert polled[0].headers["stream-next-offset"] == tail
        assert serve.wait(20) == 0
    finally:
        serve.kill()
