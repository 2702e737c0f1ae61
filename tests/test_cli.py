"""The chatscale command: config, doctor, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chatscale.cli import cli
from chatscale.config import Settings

SECRET = "s" * 40  # USE_REDIS=true needs a SESSION_SECRET, in doctor as in serve


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(*args: str, **env: str) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_config_prints_settings_with_secrets_masked() -> None:
    result = run(
        "config",
        USE_REDIS="true",
        REDIS_URI="redis://u:hunter2@127.0.0.1:6390",
        REDIS_PASSWORD="pw2",
        REDIS_KEY_PREFIX="blue",
    )
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "pw2" not in result.output
    assert "REDIS_URI" in result.output and "***" in result.output
    assert "blue" in result.output


def test_config_json() -> None:
    result = run("config", "--json")
    assert result.exit_code == 0
    shown = json.loads(result.output)
    assert shown["USE_REDIS"] is False
    assert shown["FORCED_IN_MEMORY_CACHE_NAMESPACES"] == "APP_CONFIG,CONFIG_STORE"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"USE_REDIS": "perhaps"}, "USE_REDIS"),
        ({"USE_REDIS": "true"}, "REDIS_URI"),
        ({"REDIS_PING_INTERVAL": "-3"}, "REDIS_PING_INTERVAL"),
        ({"FORCED_IN_MEMORY_CACHE_NAMESPACES": "NOPE"}, "FORCED_IN_MEMORY_CACHE_NAMESPACES"),
    ],
)
@pytest.mark.parametrize("command", ["config", "doctor"])
def test_bad_configuration_is_one_line_and_exit_2(
    command: str, env: dict[str, str], variable: str
) -> None:
    result = CliRunner().invoke(cli, [command], env=env)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert variable in lines[0]
    assert "Traceback" not in result.output


def test_doctor_in_memory_mode() -> None:
    result = run("doctor")
    assert result.exit_code == 0
    assert "memory" in result.output


def test_doctor_on_standalone(redis_standalone: Any) -> None:
    result = run(
        "doctor",
        "--json",
        USE_REDIS="true",
        SESSION_SECRET=SECRET,
        REDIS_URI=redis_standalone.url(),
        REDIS_KEY_PREFIX="doc",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["status"] == "ok"
    assert report["topology"] == "standalone"
    assert report["key_prefix"] == "doc"
    assert report["server_version"].startswith("7.")


def test_doctor_on_cluster(redis_cluster: Any) -> None:
    result = run(
        "doctor",
        "--json",
        USE_REDIS="true",
        SESSION_SECRET=SECRET,
        REDIS_URI=redis_cluster.urls()[0],
        USE_REDIS_CLUSTER="true",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["slots_covered"] == 16384
    serving = [m for m in report["masters"] if "(no slots)" not in m]
    assert len(serving) == 3
    assert len(report["masters"]) + len(report["replicas"]) == 6


def test_doctor_on_sentinel(redis_sentinel: Any) -> None:
    result = run(
        "doctor", USE_REDIS="true", SESSION_SECRET=SECRET, REDIS_URI=redis_sentinel.sentinel_url()
    )
    assert result.exit_code == 0, result.output
    assert "sentinel_master" in result.output


def test_doctor_unreachable_is_one_line_exit_1() -> None:
    result = CliRunner().invoke(
        cli,
        ["doctor"],
        env={
            "USE_REDIS": "true",
            "SESSION_SECRET": SECRET,
            "REDIS_URI": "redis://127.0.0.1:1",
            "REDIS_RETRY_MAX_ATTEMPTS": "1",
            "REDIS_CONNECT_TIMEOUT": "300",
        },
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach Redis" in lines[0]


def test_serve_with_workers_needs_redis(tmp_path: Path) -> None:
    # Several workers without Redis: several memories and session secrets. Refused before
    # anything is started (a subprocess, so that a regression cannot leave a server behind).
    done = subprocess.run(
        [str(Path(sys.executable).parent / "chatscale"), "serve", "--workers", "2", "--port", "0"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("chatscale: configuration error: --workers=2 needs USE_REDIS")


@pytest.mark.parametrize("workers", ["0", "65", "two", "\u00b9", "\u0663", "9" * 5000])
def test_serve_refuses_a_bad_worker_count(workers: str) -> None:
    # Unicode digits passed str.isdigit(): one crashed int(), another was read as 3.
    result = CliRunner(env={"USE_REDIS": "false"}).invoke(cli, ["serve", "--workers", workers])
    assert result.exit_code == 2, result.output
    assert "--workers=" in result.output and "expected 1 to 64" in result.output


@pytest.mark.parametrize(
    "uri", ["redis://u:p@ss-X9@127.0.0.1:1/6", "redis://u:pa/ss-X9@127.0.0.1:1/6", "u:ss-X9@h:1"]
)
@pytest.mark.parametrize("command", ["config", "doctor", "serve"])
def test_bad_redis_uri_never_prints_the_password(command: str, uri: str) -> None:
    result = CliRunner().invoke(
        cli, [command], env={"USE_REDIS": "true", "SESSION_SECRET": SECRET, "REDIS_URI": uri}
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "REDIS_URI" in lines[0], result.output
    assert "ss-X9" not in result.output


def test_config_masks_openai_base_url() -> None:
    result = run("config", OPENAI_BASE_URL="http://key:ss-X9@127.0.0.1:1/v1")
    assert result.exit_code == 0, result.output
    assert "http://key:***@127.0.0.1:1/v1" in result.output and "ss-X9" not in result.output


def test_doctor_with_a_wrong_password_prints_no_part_of_it(redis_acl: Any) -> None:
    wrong = "wr0ng/p@ss-X9"
    uri = redis_acl.url(username=redis_acl.acl_user, password="PLACEHOLDER").replace(
        "PLACEHOLDER", wrong.replace("/", "%2F").replace("@", "%40")
    )
    result = CliRunner().invoke(
        cli,
        ["doctor"],
        env={
            "USE_REDIS": "true",
            "SESSION_SECRET": SECRET,
            "REDIS_URI": uri,
            "REDIS_RETRY_MAX_ATTEMPTS": "1",
        },
    )
    assert result.exit_code == 1, result.output
    assert "wr0ng" not in result.output and "ss-X9" not in result.output
    assert "cannot reach Redis" in result.output
