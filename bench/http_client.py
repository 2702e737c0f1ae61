"""Lean HTTP/1.1 pieces for the HTTP benchmarks (h1-h3): raw asyncio sockets, so that the
client process (sharing the machine with the server) costs as little as possible.

One connection per request; responses of ``chatscale serve`` are chunked (streams) or have a
Content-Length (JSON). Also: starting ``chatscale serve`` processes, reading their CPU time
and peak RSS from /proc, raising the open-files limit, and percentiles.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHATSCALE = str(Path(sys.executable).parent / "chatscale")
#: Where the HTTP benchmarks keep their raw results by default (as the streams runs are).
RESULTS = Path(__file__).resolve().parent / "results"


def commit() -> str:
    """The checked-out commit (short), ``+dirty`` when the tree has changes; ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=RESULTS.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=RESULTS.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def keep_result(workload: str, options: dict[str, Any], result: Any, out: Path | None) -> Path:
    """Write one run (its options, commit, time, machine load and result) as JSON to ``out``,
    by default ``bench/results/<workload>-<commit>-<UTC time>.json``; returns the path."""
    revision = commit()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = out or RESULTS / f"{workload}-{revision.replace('+', '-')}-{stamp}.json"
    record = {
        "workload": workload,
        "options": options,
        "commit": revision,
        "utc": stamp,
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": sys.version.split()[0],
        "result": result,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def add_out_option(parser: Any) -> None:
    """``--out FILE``: where :func:`keep_result` writes the run."""
    parser.add_argument(
        "--out",
        type=Path,
        help="write the run as JSON here (default: bench/results/<workload>-<commit>-<time>.json)",
    )


def raise_nofile(wanted: int) -> int:
    """Raise the soft open-files limit toward ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Proc:
    """A ``chatscale serve`` process."""

    port: int
    popen: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """User + system CPU seconds so far."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mb(self, peak: bool = True) -> float:
        """Peak (VmHWM) or current (VmRSS) resident memory in MB."""
        key = "VmHWM:" if peak else "VmRSS:"
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def start_server(env: dict[str, str], log: Path, port: int | None = None) -> Proc:
    """Start ``chatscale serve`` and wait until /readyz answers."""
    port = port or free_port()
    with log.open("ab") as handle:
        popen = subprocess.Popen(
            [CHATSCALE, "serve", "--port", str(port)],
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(port, popen)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return proc
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")
    except BaseException:
        proc.stop()  # never leave a server behind
        raise


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], list[str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers[name] = value.strip()
        if name == "set-cookie":
            cookies.append(value.strip().split(";", 1)[0])
    return status, headers, cookies


def _request_bytes(
    host: str,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    keep_alive: bool = False,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if not keep_alive:
        lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def request(
    host: str,
    port: int,
    method: str,
    path: str,
    payload: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, list[str]]:
    """One JSON request: (status, decoded body or None, cookies set)."""
    body = None if payload is None else json.dumps(payload).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(_request_bytes(host, method, path, body, headers or {}))
        status, response_headers, cookies = await _read_head(reader)
        if "content-length" in response_headers:
            raw = await reader.readexactly(int(response_headers["content-length"]))
        else:
            raw = await reader.read()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        return status, decoded, cookies
    finally:
        writer.close()


class KeptAlive:
    """One kept-alive connection for a client's JSON requests, as a browser reuses one
    (reopened if the server closes it)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, list[str]]:
        """As :func:`request`, on this connection."""
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        body = None if payload is None else json.dumps(payload).encode()
        writer.write(_request_bytes(self.host, method, path, body, headers or {}, True))
        status, response_headers, cookies = await _read_head(reader)
        if "content-length" in response_headers:
            raw = await reader.readexactly(int(response_headers["content-length"]))
        elif status in (204, 304) or method == "HEAD":
            raw = b""
        else:
            raise ValueError(f"{method} {path}: an answer without a length on a kept connection")
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        return status, decoded, cookies

    def close(self) -> None:
        """Drop the connection."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass
class SSE:
    """One open event stream."""

    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    heartbeats: int = 0
    _buffer: bytes = field(default=b"", repr=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks (chunked transfer encoding) until its end."""
        reader = self.reader
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]

    async def events(self) -> AsyncIterator[tuple[str, str, bytes]]:
        """(id, event, data) of every event; heartbeats are counted, not yielded."""
        async for chunk in self.chunks():
            self._buffer += chunk
            while b"\n\n" in self._buffer:
                block, self._buffer = self._buffer.split(b"\n\n", 1)
                event_id, kind, data = "", "message", b""
                for line in block.split(b"\n"):
                    if line.startswith(b":"):
                        self.heartbeats += 1
                    elif line.startswith(b"id: "):
                        event_id = line[4:].decode()
                    elif line.startswith(b"event: "):
                        kind = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if data:
                    yield event_id, kind, data

    def close(self) -> None:
        """Drop the connection."""
        self.writer.close()


async def open_sse(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> SSE:
    """Open an event stream (the response head is read; events are read by the caller)."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    writer.write(_request_bytes(host, "GET", path, None, headers or {}))
    status, response_headers, _ = await _read_head(reader)
    return SSE(status, response_headers, reader, writer)
