"""What ``chatscale serve`` checks before announcing its URL, and ``chatscale doctor``
checking the same things (plus a password Redis ignores and the model upstream)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chatscale.cli import cli
from chatscale.config import Settings
from tests.llm.fake_openai import FakeOpenAI
from tests.server.helpers import free_port

SECRET = "s" * 40
CHATSCALE = str(Path(sys.executable).parent / "chatscale")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def serve(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``chatscale serve`` that must fail by itself (bounded: a server that starts
    instead is killed by the timeout and the test fails)."""
    began = time.monotonic()
    done = subprocess.run(
        [CHATSCALE, "serve", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    return done, time.monotonic() - began


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_serve_on_a_taken_port_fails_before_announcing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done, _ = serve(tmp_path, "--port", str(port))
    assert done.returncode == 1, done.stderr
    line = one_line(done.stderr)
    assert (
        line == f"chatscale: cannot listen on 127.0.0.1:{port}: address already in use (HOST/PORT)"
    )
    assert "serving on" not in done.stdout + done.stderr


def test_serve_without_redis_fails_at_once_before_announcing(tmp_path: Path) -> None:
    nothing = free_port()
    done, took = serve(
        tmp_path,
        "--port",
        "0",
        USE_REDIS="true",
        REDIS_URI=f"redis://127.0.0.1:{nothing}",
        SESSION_SECRET=SECRET,
        REDIS_CONNECT_TIMEOUT="20000",
    )
    assert done.returncode == 1, done.stderr
    line = one_line(done.stderr)
    assert line == (
        f"chatscale: cannot reach Redis (standalone at 127.0.0.1:{nothing}): connection refused"
    )
    assert took < 10  # not after REDIS_CONNECT_TIMEOUT and its retries


def doctor(*args: str, **env: str) -> Any:
    return CliRunner().invoke(cli, ["doctor", *args], env=env)


def test_doctor_refuses_what_serve_refuses(redis_standalone: Any) -> None:
    result = doctor(USE_REDIS="true", REDIS_URI=redis_standalone.url())
    assert result.exit_code == 2, result.output
    assert one_line(result.output).startswith("chatscale: configuration error: SESSION_SECRET=")


def test_doctor_says_connection_refused_at_once() -> None:
    began = time.monotonic()
    result = doctor(
        USE_REDIS="true",
        REDIS_URI=f"redis://127.0.0.1:{free_port()}",
        SESSION_SECRET=SECRET,
        REDIS_CONNECT_TIMEOUT="20000",
    )
    assert time.monotonic() - began < 5
    assert result.exit_code == 1
    assert one_line(result.output).endswith(": connection refused")


def test_doctor_prints_words_not_python_reprs(redis_standalone: Any) -> None:
    result = doctor(USE_REDIS="true", REDIS_URI=redis_standalone.url(), SESSION_SECRET=SECRET)
    assert result.exit_code == 0, result.output
    assert "True" not in result.output and "False" not in result.output
    assert "None" not in result.output
    tls = [line for line in result.output.splitlines() if line.startswith("tls ")]
    assert tls == ["tls              off"]


def test_doctor_warns_of_a_password_redis_does_not_use(redis_standalone: Any) -> None:
    uri = redis_standalone.url(password="unused-password")
    result = doctor("--json", USE_REDIS="true", REDIS_URI=uri, SESSION_SECRET=SECRET)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["status"] == "warning"
    assert any("accepts connections without one" in w for w in report["warnings"])
    assert "unused-password" not in result.output


def test_doctor_is_quiet_about_a_password_redis_asks_for(redis_acl: Any) -> None:
    result = doctor("--json", USE_REDIS="true", REDIS_URI=redis_acl.url(), SESSION_SECRET=SECRET)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "ok"


def test_doctor_reports_the_model_upstream() -> None:
    with FakeOpenAI() as upstream:
        result = doctor("--json", OPENAI_BASE_URL=upstream.base_url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["status"] == "ok"
    assert report["upstream"]["reachable"] is True
    assert "fake-1" in report["upstream"]["models"]


def test_doctor_warns_of_an_unreachable_upstream() -> None:
    result = doctor(
        OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        OPENAI_MAX_RETRIES="0",
    )
    assert result.exit_code == 0, result.output
    assert "status           warning" in result.output
    assert "the model upstream is unreachable: cannot reach the model server" in result.output
