"""``chatscale serve`` with its conversations in a database: a user comes back to them after
a restart (SQLite by default, PostgreSQL with DATABASE_URL), the default file lands in the
working directory, and a database that cannot be used stops the start on one line."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.procs import ServeProcess

SECRET = "database-test-secret-0123456789abcdefghij"
CHATSCALE = str(Path(sys.executable).parent / "chatscale")
FAST = {"DEMO_TOKENS_PER_SECOND": "2000", "DEMO_RESPONSE_TOKENS": "12"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


async def _answered(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    """The conversation once its answer is stored."""
    for _ in range(200):
        found: dict[str, Any] = (await client.get(f"/api/conversations/{conversation_id}")).json()
        if any(m["role"] == "assistant" for m in found.get("messages", [])):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("the answer was never stored")


async def test_a_user_comes_back_to_their_conversations_after_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": database_url, "SESSION_SECRET": SECRET, **FAST}
    server = ServeProcess(env, tmp_path / "serve.log", cwd=tmp_path)
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = (await client.post("/api/chat", json={"message": "remember me"})).json()
            before = await _answered(client, started["conversation_id"])
            cookies = client.cookies
        server.stop()
        await asyncio.to_thread(server.start)
        async with httpx.AsyncClient(base_url=server.url, cookies=cookies, timeout=10) as client:
            listed = (await client.get("/api/conversations")).json()["conversations"]
            after = (await client.get(f"/api/conversations/{started['conversation_id']}")).json()
            # A new message continues the same conversation after the restart.
            more = await client.post(
                "/api/chat",
                json={"message": "still there?", "conversation_id": started["conversation_id"]},
            )
            assert more.status_code == 202, more.text
            await asyncio.sleep(0.2)
            grown = await _answered_twice(client, started["conversation_id"])
        assert [c["id"] for c in listed] == [started["conversation_id"]]
        assert after == before
        assert [m["role"] for m in before["messages"]] == ["user", "assistant"]
        assert [m["content"] for m in grown["messages"] if m["role"] == "user"] == [
            "remember me",
            "still there?",
        ]
    finally:
        server.stop()


async def _answered_twice(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    for _ in range(200):
        found: dict[str, Any] = (await client.get(f"/api/conversations/{conversation_id}")).json()
        if sum(m["role"] == "assistant" for m in found["messages"]) == 2:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("the second answer was never stored")


async def test_the_default_database_is_a_file_in_the_working_directory(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "", "USE_REDIS": "false", "SESSION_SECRET": SECRET, **FAST}
    server = ServeProcess(env, tmp_path / "serve.log", cwd=tmp_path)
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = (await client.post("/api/chat", json={"message": "where am I"})).json()
            await _answered(client, started["conversation_id"])
    finally:
        server.stop()
    assert (tmp_path / "chatscale.db").is_file()
    log = (tmp_path / "serve.log").read_text()
    assert "conversations in sqlite" in log


async def test_paging_through_the_api(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", "SESSION_SECRET": SECRET, **FAST}
    env["CHAT_RATE_LIMIT"] = "1000/minute"
    env["CHAT_CONCURRENCY_LIMIT"] = "0"
    server = ServeProcess(env, tmp_path / "serve.log", cwd=tmp_path)
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            ids = []
            for i in range(7):
                answer = await client.post("/api/chat", json={"message": f"number {i}"})
                ids.append(answer.json()["conversation_id"])
            for conversation_id in ids:
                await _answered(client, conversation_id)
            seen: list[str] = []
            params: dict[str, str] = {"limit": "3"}
            for _ in range(10):
                body = (await client.get("/api/conversations", params=params)).json()
                seen += [c["id"] for c in body["conversations"]]
                if "next_cursor" not in body:
                    break
                params["before"] = body["next_cursor"]
            everything = (await client.get("/api/conversations")).json()
            bad_limit = await client.get("/api/conversations", params={"limit": "0"})
            bad_cursor = await client.get("/api/conversations", params={"before": "garbage"})
    finally:
        server.stop()
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    assert seen == [c["id"] for c in everything["conversations"]]
    assert "next_cursor" not in everything
    assert bad_limit.status_code == 400
    assert "expected a whole number from 1 to 1000" in bad_limit.json()["error"]
    assert bad_cursor.status_code == 400
    assert "not a cursor from a previous page" in bad_cursor.json()["error"]


def _serve_fails(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``chatscale serve`` that must fail by itself (bounded by the timeout)."""
    return subprocess.run(
        [CHATSCALE, "serve", "--port", "0"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_a_bad_database_url_fails_on_one_line(tmp_path: Path) -> None:
    done = _serve_fails(tmp_path, DATABASE_URL="mysql://root:hunter2@db/chat")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("chatscale: configuration error: DATABASE_URL=")
    assert "unsupported scheme 'mysql'" in lines[0]
    assert "hunter2" not in done.stderr + done.stdout


def test_an_unreachable_database_fails_before_announcing(tmp_path: Path) -> None:
    done = _serve_fails(tmp_path, DATABASE_URL="postgresql://chat:hunter2@127.0.0.1:1/chat")
    assert done.returncode == 1, done.stderr
    assert "serving on" not in done.stderr
    assert "database postgresql+asyncpg://chat:***@127.0.0.1:1/chat cannot be used" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_an_unmigrated_database_without_migrate_is_refused(tmp_path: Path) -> None:
    done = _serve_fails(
        tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}", DATABASE_MIGRATE="false"
    )
    assert done.returncode == 1, done.stderr
    assert "is at schema revision (none)" in done.stderr
    assert "chatscale db upgrade" in done.stderr
    upgraded = subprocess.run(
        [CHATSCALE, "db", "upgrade"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert "is at schema revision 0001" in upgraded.stdout


def test_doctor_reports_the_database_without_migrating_it(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}",
        "SESSION_SECRET": SECRET,
    }

    def doctor(**more: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [CHATSCALE, "doctor", "--json"],
            env={**env, **more},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        report: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
        return done.returncode, report

    # The first run: no file yet (doctor does not create it), serve will.
    status, report = doctor()
    assert status == 0 and report["status"] == "ok", report
    assert report["database"]["revision"] is None and report["database"]["needed"] == "0001"
    assert "serve creates it" in report["database"]["note"]
    assert "sessions in the database" in report["detail"]
    assert not (tmp_path / "d.db").exists()
    status, report = doctor(DATABASE_MIGRATE="false")
    assert status == 1 and "run chatscale db upgrade" in report["problems"][0]
    upgraded = subprocess.run(
        [CHATSCALE, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60
    )
    assert upgraded.returncode == 0, upgraded.stderr
    status, report = doctor()
    assert status == 0 and report["status"] == "ok", report
    assert report["database"]["revision"] == "0001"
    # A database at another revision than this version's: serve would migrate it.
    raw = sqlite3.connect(tmp_path / "d.db")
    try:
        with raw:  # commits
            raw.execute("UPDATE alembic_version SET version_num = '0000'")
    finally:
        raw.close()
    status, report = doctor()
    assert status == 0 and report["status"] == "warning", report
    assert "at schema revision 0000: serve will migrate it to 0001" in report["warnings"][0]
    status, report = doctor(DATABASE_URL="postgresql://chat:hunter2@127.0.0.1:1/chat")
    assert status == 1 and report["status"] == "error"
    assert "hunter2" not in json.dumps(report)
    assert "chat:***@127.0.0.1:1/chat" in report["database"]["url"]
