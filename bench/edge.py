"""The HTTP edge attacked: huge chunked body, huge header, slow headers, slow body, forged
X-Forwarded-For, unparsable request. Starts its own ``chatscale serve`` on 127.0.0.1 and
prints one JSON line per attack (status, seconds, the server's peak RSS growth).

    python bench/edge.py [--body-mb 300] [--header-mb 64] [--wait 15]

Runs the installed code; to measure another checkout, put its ``src`` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SERVE = [sys.executable, "-c", "from chatscale.cli import main; main()", "serve"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One ``chatscale serve`` with extra environment."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*SERVE, "--port", str(self.port)],
                env={**os.environ, "DEMO_RESPONSE_TOKENS": "2", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1):
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


async def _exchange(
    port: int, feed: Callable[[asyncio.StreamWriter], Coroutine[Any, Any, None]], wait_s: float
) -> tuple[str, float]:
    """Send with ``feed`` while reading; the answer's status line (or what happened)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    started = time.monotonic()
    sender = asyncio.create_task(feed(writer))
    try:
        line = await asyncio.wait_for(reader.readline(), wait_s)
        status = line.decode("latin-1").strip() or "closed without an answer"
    except TimeoutError:
        status = f"no answer after {wait_s:g} s"
    except ConnectionResetError:
        status = "connection reset"
    elapsed = time.monotonic() - started
    sender.cancel()
    with contextlib.suppress(BaseException):
        await sender
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return status, elapsed


async def _quietly(writer: asyncio.StreamWriter, parts: Any, pause_s: float = 0.0) -> None:
    with contextlib.suppress(OSError):
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause_s:
                await asyncio.sleep(pause_s)


def _chunked_body(total: int) -> Any:
    yield (
        b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"10000\r\n" + b"x" * 65_536 + b"\r\n"
    for _ in range(total // 65_536):
        yield piece
    yield b"0\r\n\r\n"


def _big_header(total: int) -> Any:
    yield b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: "
    for _ in range(total // 65_536):
        yield b"a" * 65_536
    yield b"\r\n\r\n"


def _slow_headers() -> Any:
    yield b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
    while True:
        yield b"X-A: b\r\n"


def _slow_body() -> Any:
    yield (
        b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )
    while True:
        yield b" "


def _post_chat(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(
        f"{url}/api/chat",
        data=b'{"message": "hi"}',
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


async def run(args: argparse.Namespace, log: Path) -> list[dict[str, Any]]:
    """Every attack, one fresh server each."""
    results: list[dict[str, Any]] = []
    attacks: list[tuple[str, Callable[[asyncio.StreamWriter], Coroutine[Any, Any, None]]]] = [
        (
            f"chunked body of {args.body_mb} MB to POST /api/chat",
            lambda w: _quietly(w, _chunked_body(args.body_mb * 1_048_576)),
        ),
        (
            f"header of {args.header_mb} MB",
            lambda w: _quietly(w, _big_header(args.header_mb * 1_048_576)),
        ),
        ("slow headers (a line every 0.5 s)", lambda w: _quietly(w, _slow_headers(), 0.5)),
        ("slow body (a byte every 0.5 s)", lambda w: _quietly(w, _slow_body(), 0.5)),
        ("unparsable request", lambda w: _quietly(w, [b"GARBAGE\r\n\r\n"])),
    ]
    for name, feed in attacks:
        server = Server({}, log)
        try:
            before = server.peak_rss_mib()
            status, seconds = await _exchange(server.port, feed, args.wait)
            await asyncio.sleep(0.5)
            grown = server.peak_rss_mib() - before
        finally:
            server.stop()
        results.append(
            {"attack": name, "answer": status, "s": round(seconds, 2), "rss_mib": round(grown, 1)}
        )
    limits = {"CHAT_RATE_LIMIT": "1/minute", "BAN_VIOLATION_LIMIT": "1"}
    server = Server(limits, log)
    try:
        statuses = [_post_chat(server.url) for _ in range(3)]
        forged = _post_chat(server.url, {"X-Forwarded-For": "203.0.113.9"})
    finally:
        server.stop()
    results.append(
        {
            "attack": "banned client forges X-Forwarded-For (no TRUSTED_PROXIES)",
            "answer": f"{statuses} then {forged}",
        }
    )
    return results


def main() -> None:
    """Parse the options, attack, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--body-mb", type=int, default=300)
    parser.add_argument("--header-mb", type=int, default=64)
    parser.add_argument("--wait", type=float, default=15.0, help="seconds to wait for an answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for result in asyncio.run(run(args, Path(tmp) / "serve.log")):
            print(json.dumps(result))


if __name__ == "__main__":
    main()
