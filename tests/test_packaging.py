"""The package as users get it: ``python -m chatscale``, the library without the server
extra, and a wheel and an sdist built and installed into fresh virtual environments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import httpx
import pytest

from tests.server.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
#: The server extra's libraries: none of them may be needed to import the library parts.
SERVER_ONLY = (
    "starlette",
    "uvicorn",
    "limits",
    "prometheus_client",
    "openai",
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
)

IMPORT_CHECK = f"""
import sys
for name in {SERVER_ONLY!r}:
    sys.modules.setdefault(name, None)  # None: importing it raises ModuleNotFoundError
import chatscale.cache, chatscale.redis, chatscale.sessions, chatscale.streams
from chatscale.config import load_settings
load_settings(allowed_origins="https://chat.example")
for part in ("chatscale.ratelimit", "chatscale.llm"):
    try:
        __import__(part)
    except ModuleNotFoundError as exc:
        print(exc)
    else:
        print(part, "imported")
"""
EXPECTED = [
    "chatscale.ratelimit needs the 'server' extra: pip install 'chatscale[server]' "
    "(missing: limits, starlette)",
    "chatscale.llm needs the 'server' extra: pip install 'chatscale[server]' (missing: openai)",
]


def run(*cmd: str | Path, timeout: float = 60, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


def test_python_m_chatscale() -> None:
    out = run(sys.executable, "-m", "chatscale", "--help")
    assert "serve" in out and "doctor" in out


def test_library_parts_import_without_the_server_extra() -> None:
    # The server extra's modules made unimportable in this interpreter; the fresh virtual
    # environment below checks the same without them installed at all.
    out = run(sys.executable, "-c", IMPORT_CHECK, cwd=ROOT)
    assert out.splitlines() == EXPECTED


def _fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_and_sdist_install_and_serve(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, timeout=300)
    (wheel,) = dist.glob("chatscale-*.whl")
    (sdist,) = dist.glob("chatscale-*.tar.gz")

    # The wheel alone: the library and the command, no server.
    bare = _fresh_venv(tmp_path / "bare")
    run(bare / "python", "-m", "pip", "install", "-q", wheel, timeout=600)
    assert run(bare / "python", "-c", IMPORT_CHECK, cwd=tmp_path).splitlines() == EXPECTED
    assert "serve" in run(bare / "chatscale", "--help")
    assert "serve" in run(bare / "python", "-m", "chatscale", "--help")

    # The sdist with the server extra: chatscale serve answers /healthz.
    full = _fresh_venv(tmp_path / "full")
    run(
        full / "python",
        "-m",
        "pip",
        "install",
        "-q",
        f"chatscale[server] @ {sdist.as_uri()}",
        timeout=600,
    )
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(full / "chatscale"), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert answer is not None, (tmp_path / "serve.log").read_text()
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
