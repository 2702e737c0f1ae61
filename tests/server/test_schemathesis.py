"""schemathesis against a real ``chatscale serve``, in memory and on Redis: no 5xx, and every
response matches /openapi.json (status, content type, headers, body schema), including the
answers to schema-violating requests and the stateful sequences its links describe. Both
runs have Durable Streams on, so the document (and the fuzzing) includes the protocol's
routes (each store's) and the chat answers read as Durable Streams.

Bounded: ``CHATSCALE_SCHEMATHESIS_SECONDS`` (default 90) per mode; a failure prints
schemathesis's report with a ``curl`` line per problem.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unique_prefix
from tests.server.procs import ServeProcess

SECONDS = int(os.environ.get("CHATSCALE_SCHEMATHESIS_SECONDS", "90"))
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
#: Limits high enough that fuzzing reaches the handlers instead of the limiter (the
#: limiter's answers are held to the document by tests/server/test_openapi.py); a fast,
#: short demo model so that streams reached through links end quickly.
ENV = {
    "SESSION_SECRET": "schemathesis-test-secret-0123456789abcdef",
    "CHAT_RATE_LIMIT": "100000/minute",
    # Every request of the fuzzer comes without a cookie, so each makes a session.
    "SESSION_CREATE_LIMIT": "1000000/minute",
    "CHAT_CONCURRENCY_LIMIT": "0",
    "DEMO_TOKENS_PER_SECOND": "100000",
    "DEMO_RESPONSE_TOKENS": "5",
}
#: The write token schemathesis sends to the protocol's routes (the bearer scheme of
#: schemathesis.toml reads it from this variable); without it they answer 401, which its
#: ``ignored_auth`` check verifies.
TOKEN_VARIABLE = "CHATSCALE_SCHEMATHESIS_DS_TOKEN"
WRITE_TOKEN = "schemathesis-write-token-0123456789"
#: Durable Streams on: /openapi.json then has the protocol's routes ({path}/{name}) and the
#: chat view (GET/HEAD /api/chat/stream/{id}/durable); live reads end well within
#: --request-timeout.
DURABLE_ENV = {
    "DURABLE_STREAMS": "true",
    "DURABLE_STREAMS_READ_TOKENS": "schemathesis-read-token-0123456789",
    "DURABLE_STREAMS_WRITE_TOKENS": WRITE_TOKEN,
    "DURABLE_STREAMS_LONG_POLL_TIMEOUT": "1",
    "DURABLE_STREAMS_SSE_DURATION": "2",
}


def _run_schemathesis(url: str, report: Path) -> subprocess.CompletedProcess[str]:
    # Run in the test's folder: schemathesis keeps a cache (.schemathesis/) in its cwd.
    argv = [
        SCHEMATHESIS,
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-time",
        str(SECONDS),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        # The session's event feed never ends by design (the page keeps it open); it is a
        # plain SSE GET without parameters, covered by tests/server/test_api.py.
        "--exclude-path",
        "/api/events",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--no-color",
    ]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=SECONDS + 90,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=report.parent,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "", TOKEN_VARIABLE: WRITE_TOKEN},
    )


def _check(result: subprocess.CompletedProcess[str], log: Path) -> None:
    output = result.stdout + result.stderr
    server_log = log.read_text()
    assert result.returncode == 0, f"{output[-12000:]}\n--- server log ---\n{server_log[-3000:]}"
    assert "Traceback" not in server_log, server_log[-5000:]


@pytest.mark.timeout(SECONDS + 150)
def test_schemathesis_in_memory(tmp_path: Path) -> None:
    server = ServeProcess({**ENV, **DURABLE_ENV}, tmp_path / "serve.log").start()
    try:
        result = _run_schemathesis(server.url, tmp_path / "junit.xml")
    finally:
        server.stop()
    _check(result, tmp_path / "serve.log")


@pytest.mark.timeout(SECONDS + 150)
def test_schemathesis_on_redis(tmp_path: Path, redis_standalone: Any) -> None:
    env = {
        **ENV,
        **DURABLE_ENV,
        "USE_REDIS": "true",
        "REDIS_URI": redis_standalone.url(),
        "REDIS_KEY_PREFIX": unique_prefix(),
    }
    server = ServeProcess(env, tmp_path / "serve.log").start()
    try:
        result = _run_schemathesis(server.url, tmp_path / "junit.xml")
    finally:
        server.stop()
    _check(result, tmp_path / "serve.log")
