"""chatscale.logs' formatters and chatscale.failures' summaries, in process (the server's
own logs are checked on real processes in tests/server/test_logs.py)."""

from __future__ import annotations

import json
import logging
import sys
import time

import pytest

from chatscale import logcontext
from chatscale.failures import FailureLog
from chatscale.logs import JsonFormatter, TextFormatter
from chatscale.masking import install_log_masking


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    install_log_masking()
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.getLogRecordFactory()(
        "chatscale.test", logging.WARNING, __file__, 1, message, args, exc_info
    )


def failing() -> BaseException:
    try:
        raise ConnectionError("Error 111 connecting to redis://app:hunter2@127.0.0.1:1")
    except ConnectionError as exc:
        return exc


def test_json_is_one_masked_object_per_line_with_the_ids() -> None:
    request = logcontext.request_id.set("req-1")
    stream = logcontext.stream_id.set("stream-1")
    try:
        line = JsonFormatter().format(record("to %s", "redis://app:hunter2@h:1", exc=failing()))
    finally:
        logcontext.stream_id.reset(stream)
        logcontext.request_id.reset(request)
    assert "\n" not in line and "hunter2" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "chatscale.test"
    assert entry["message"] == "to redis://app:***@h:1"
    assert entry["request_id"] == "req-1" and entry["stream_id"] == "stream-1"
    assert entry["exception"].startswith("Traceback") and "app:***@" in entry["exception"]
    assert entry["time"].endswith("Z")


def test_text_has_a_timestamp_and_the_ids_given_as_extra() -> None:
    entry = record("hello")
    entry.stream_id = "stream-2"
    line = TextFormatter().format(entry)
    assert line.endswith(" WARNING chatscale.test: hello [stream_id=stream-2]")
    assert line[:4].isdigit() and line[10] == "T"


def test_failures_give_a_first_line_summaries_and_a_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = FailureLog(logging.getLogger("chatscale.test"), "doing it", window_s=0.2)
    with caplog.at_level(logging.WARNING, "chatscale.test"):
        deadline = time.monotonic() + 0.5
        count = 0
        while time.monotonic() < deadline:
            failures.failed(failing())
            count += 1
            time.sleep(0.005)
        failures.succeeded()
        failures.succeeded()  # healthy already: nothing more
    lines = [r.getMessage() for r in caplog.records]
    assert count > 20 and 3 <= len(lines) <= 5, lines
    assert lines[0].startswith("doing it failed (ConnectionError: Error 111")
    assert "app:***@" in lines[0] and "hunter2" not in "".join(lines)
    assert all("still failing" in line and "failures in the last" in line for line in lines[1:-1])
    assert lines[-1].startswith(f"doing it works again after {count} failures")
    assert not [r for r in caplog.records if r.exc_info]


def test_failure_tracebacks_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    failures = FailureLog(logging.getLogger("chatscale.test"), "doing it")
    with caplog.at_level(logging.DEBUG, "chatscale.test"):
        for _ in range(3):
            failures.failed(failing())
    traced = [r for r in caplog.records if r.exc_info]
    assert len(traced) == 3 and all(r.levelno == logging.DEBUG for r in traced)
    assert sys.exc_info() == (None, None, None)
