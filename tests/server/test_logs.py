"""The server's logs (LOG_LEVEL, LOG_FORMAT, ACCESS_LOG) read from real ``chatscale serve``
processes: JSON lines with their fields and ids, level filtering, the access log, and one
summarised line per expected failure while Redis is down (docs/server.md, "Logs")."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.helpers import free_port
from tests.server.procs import ServeProcess
from tests.server.rig import SECRET

#: The one line ``serve`` prints itself (not a log record).
BANNER = "chatscale: serving on"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) \S+: ")


#: A model server that is not there: a generation fails and logs within its stream.
UNREACHABLE_UPSTREAM = {
    "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
    "OPENAI_API_KEY": "test-key",
    "OPENAI_MODELS": "upstream-model",
}


@contextlib.contextmanager
def serving(tmp_path: Path, **env: str) -> Iterator[ServeProcess]:
    server = ServeProcess(
        {"DEMO_RESPONSE_TOKENS": "2", "DEMO_TOKENS_PER_SECOND": "1000", **env},
        tmp_path / f"serve-{time.monotonic_ns()}.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def log_lines(server: ServeProcess) -> list[str]:
    return [
        line
        for line in server.log.read_text().splitlines()
        if line.strip() and not line.startswith(BANNER)
    ]


def chat(server: ServeProcess, request_id: str, **body: Any) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        started = client.post(
            "/api/chat", json={"message": "hi", **body}, headers={"X-Request-ID": request_id}
        )
        assert started.status_code == 202, started.text
        with client.stream("GET", f"/api/chat/stream/{started.json()['stream_id']}") as events:
            for _ in events.iter_lines():
                pass
        return started


def test_json_lines_carry_time_level_logger_message_and_ids(tmp_path: Path) -> None:
    with serving(tmp_path, LOG_FORMAT="json", ACCESS_LOG="true", **UNREACHABLE_UPSTREAM) as server:
        started = chat(server, "req-json-1", model="upstream-model")
        assert started.headers["X-Request-ID"] == "req-json-1"
        stream_id = started.json()["stream_id"]
        generated = httpx.get(f"{server.url}/healthz", timeout=5).headers["X-Request-ID"]
    entries = [json.loads(line) for line in log_lines(server)]  # every line is one object
    assert entries
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    chat_line = next(e for e in access if e["path"] == "/api/chat")
    assert chat_line["request_id"] == "req-json-1"
    assert chat_line["method"] == "POST" and chat_line["status"] == 202
    assert any(e.get("request_id") == generated and e["path"] == "/healthz" for e in access)
    failed = [e for e in entries if e.get("stream_id") == stream_id]
    assert any(e["logger"] == "chatscale.streams.runner" for e in failed), entries
    assert all(e["request_id"] == "req-json-1" for e in failed)
    # The openai SDK's and httpx's own lines (retries, requests) stay below WARNING.
    assert not [e for e in entries if e["logger"].startswith(("openai", "httpx"))]


@pytest.mark.slow
def test_workers_log_like_the_parent(tmp_path: Path, standalone_factory: Any) -> None:
    redis = standalone_factory()
    env = {
        "USE_REDIS": "true",
        "REDIS_URI": redis.url(),
        "SESSION_SECRET": SECRET,
        "LOG_FORMAT": "json",
        "ACCESS_LOG": "true",
    }
    server = ServeProcess(env, tmp_path / "workers.log", args=("--workers", "2"))
    server.start()
    try:
        for number in range(6):
            httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": f"w{number}"}, timeout=5)
    finally:
        server.stop()
    entries = [json.loads(line) for line in log_lines(server)]
    logged = {e["request_id"] for e in entries if e["logger"] == "uvicorn.access"}
    assert {f"w{number}" for number in range(6)} <= logged, entries
    # Both workers drained, each logging in JSON.
    assert len([e for e in entries if e["message"].startswith("draining")]) == 2, entries


def test_a_forged_request_id_is_replaced(tmp_path: Path) -> None:
    with serving(tmp_path, LOG_FORMAT="json", ACCESS_LOG="true") as server:
        forged = 'x" status=200 user=admin'  # a space, a quote: could fake fields in text
        answer = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": forged}, timeout=5)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])
    access = [json.loads(line) for line in log_lines(server)]
    assert [e["request_id"] for e in access if e.get("path") == "/healthz"] == [
        answer.headers["X-Request-ID"]
    ]


def test_text_is_the_default_with_timestamps_and_no_access_log(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        chat(server, "req-text-1")
    lines = log_lines(server)
    assert lines
    records = [line for line in lines if TEXT_LINE.match(line)]
    assert records == lines, lines
    assert not [line for line in lines if "uvicorn.access" in line or "/api/chat" in line]
    assert not [line for line in lines if " DEBUG " in line]


def test_access_log_on_in_text(tmp_path: Path) -> None:
    with serving(tmp_path, ACCESS_LOG="true") as server:
        chat(server, "req-text-2")
    access = [line for line in log_lines(server) if " uvicorn.access: " in line]
    assert any('"POST /api/chat HTTP/1.1" 202' in line for line in access), access
    assert any("[request_id=req-text-2]" in line for line in access), access


def test_log_level_filters(tmp_path: Path) -> None:
    with serving(tmp_path, LOG_LEVEL="warning", ACCESS_LOG="true") as quiet:
        chat(quiet, "req-quiet")
    quiet_lines = log_lines(quiet)
    # The access log was asked for explicitly: it stays; chatscale's INFO lines do not.
    assert not [line for line in quiet_lines if " INFO " in line and "uvicorn.access" not in line]
    assert any("uvicorn.access" in line for line in quiet_lines)
    with serving(tmp_path, LOG_LEVEL="DEBUG", **UNREACHABLE_UPSTREAM) as verbose:
        chat(verbose, "req-verbose", model="upstream-model")
    verbose_lines = log_lines(verbose)
    # LOG_LEVEL=DEBUG lets the libraries' chatter through: uvicorn's start-up, the openai
    # SDK's request lines (its HTTP transport, aiohttp by default, logs none of its own).
    assert any(" INFO uvicorn.error: " in line for line in verbose_lines), verbose_lines
    assert any(
        " DEBUG openai._base_client: Sending HTTP Request" in line for line in verbose_lines
    ), verbose_lines


def test_a_bad_log_setting_fails_in_one_line(tmp_path: Path) -> None:
    for name, value in (("LOG_LEVEL", "loud"), ("LOG_FORMAT", "xml"), ("ACCESS_LOG", "maybe")):
        server = ServeProcess({name: value}, tmp_path / f"bad-{name}.log")
        server.start(wait=False)
        assert server.wait(30) == 2
        output = server.log.read_text().strip()
        assert output.startswith(f"chatscale: configuration error: {name}"), output
        assert len(output.splitlines()) == 1, output


@pytest.mark.slow
def test_redis_down_gives_bounded_one_line_failures(
    tmp_path: Path, standalone_factory: Any
) -> None:
    redis = standalone_factory()
    env = {
        "USE_REDIS": "true",
        "REDIS_URI": redis.url(),
        "SESSION_SECRET": SECRET,
        "REDIS_RETRY_MAX_ATTEMPTS": "1",
        "REDIS_CONNECT_TIMEOUT": "300",
        "REDIS_SOCKET_TIMEOUT": "500",
        # Heartbeats, reaper rounds and lease renewals every ~0.3-0.5 s: many failures.
        "STREAM_LEASE_TTL": "1000",
        # An answer running through the whole outage (its lease renewed every 0.33 s).
        "DEMO_RESPONSE_TOKENS": "400",
        "DEMO_TOKENS_PER_SECOND": "20",
    }
    outage_s = 12.0
    with serving(tmp_path, **env) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.post("/api/chat", json={"message": "long"}).status_code == 202
        time.sleep(0.5)
        before = len(server.log.read_text().splitlines())
        redis.kill()
        time.sleep(outage_s)
        redis.restart()
        time.sleep(3)
        during = server.log.read_text().splitlines()[before:]
    assert not [line for line in during if "Traceback" in line], "\n".join(during)
    # Every line is one record (no continuation lines of a traceback).
    assert all(TEXT_LINE.match(line) for line in during), "\n".join(during)
    summaries = [line for line in during if "failures in the last" in line]
    assert summaries, "\n".join(during)
    # Each failing activity: its first failure, about one summary per 10 s, its recovery.
    per_logger: dict[str, int] = {}
    for line in during:
        logger = line.split(" ")[2]
        per_logger[logger] = per_logger.get(logger, 0) + 1
    assert max(per_logger.values()) <= 12, "\n".join(during)
    assert len(during) <= 40, "\n".join(during)
