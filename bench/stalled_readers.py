"""Stalled readers: server memory while many clients follow big answers and never read.

Starts ``chatscale serve`` (memory backends, demo model) on a loopback port, starts
``--answers`` answers of about ``--answer-mb`` MB each, and opens ``--clients`` raw
connections that request those streams and never read a byte (``--rcvbuf``: their receive
buffer; by default the kernel's, which lets the kernel absorb the deltas so that the server
gets as far as the final event). The
server's resident memory (``VmRSS`` from ``/proc``) is sampled until ``--seconds`` have
passed; the connections stay open the whole time.

    python bench/stalled_readers.py --clients 200 --answers 5 --answer-mb 1
    python bench/stalled_readers.py --src /path/to/older/src ...   # the same against old code

``--src`` puts another source tree first on the server's ``PYTHONPATH`` (compare before and
after a change with the same venv). Settings the old code does not know are ignored by it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx

CHATSCALE = str(Path(sys.executable).parent / "chatscale")
#: Characters per demo token (a word and a space), measured on the demo model's output.
_CHARS_PER_TOKEN = 6.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def _stalled(port: int, path: str, cookie: str, rcvbuf: int) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
    )
    return sock


def run(args: argparse.Namespace) -> dict[str, object]:
    """One measurement; the numbers as a dict."""
    port = _free_port()
    tokens = int(args.answer_mb * 1_000_000 / _CHARS_PER_TOKEN)
    env = {
        **os.environ,
        "DEMO_TOKENS_PER_SECOND": "100000",
        "DEMO_RESPONSE_TOKENS": str(tokens),
        "STREAM_MAX_BYTES": str(64 * 1_048_576),
        "STREAM_MAX_EVENTS": "10000000",
        "CHAT_CONCURRENCY_LIMIT": "0",
        "CHAT_RATE_LIMIT": "100000/minute",
        "SESSION_CREATE_LIMIT": "100000/minute",
        "SSE_STALL_TIMEOUT": str(args.stall_timeout),
        "STREAM_FINISHED_TTL": "600",
    }
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join([args.src, env.get("PYTHONPATH", "")]).strip(":")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [CHATSCALE, "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return _measure(args, proc, port, log)


def _measure(
    args: argparse.Namespace, proc: subprocess.Popen[bytes], port: int, log: IO[bytes]
) -> dict[str, object]:
    sockets: list[socket.socket] = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server did not start: {log.read()[-2000:]!r}")
            time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=30) as client:
            client.get("/api/conversations")
            cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
            idle = _rss_mb(proc.pid)
            idle_sockets = _sockets(proc.pid)
            streams = [
                client.post("/api/chat", json={"message": f"answer {i}"}).json()["stream_id"]
                for i in range(args.answers)
            ]
        began = time.monotonic()
        for i in range(args.clients):
            path = f"/api/chat/stream/{streams[i % len(streams)]}"
            sockets.append(_stalled(port, path, cookie, args.rcvbuf))
        samples: list[tuple[float, float]] = []
        while time.monotonic() - began < args.seconds:
            samples.append((time.monotonic() - began, _rss_mb(proc.pid)))
            time.sleep(0.25)
        peak = max(rss for _, rss in samples)
        log.seek(0)
        dropped = log.read().count(b"dropped an event stream")
        return {
            "code": args.src or "this tree",
            "clients": args.clients,
            "answers": args.answers,
            "answer_mb": args.answer_mb,
            "stall_timeout_s": args.stall_timeout,
            "rcvbuf": args.rcvbuf or "default",
            "rss_idle_mb": round(idle, 1),
            "rss_peak_mb": round(peak, 1),
            "rss_at_end_mb": round(samples[-1][1], 1),
            "open_sockets_at_end": _sockets(proc.pid) - idle_sockets,
            "streams_dropped": dropped,
            "held_per_client_kb": round((peak - idle) * 1024 / max(args.clients, 1), 1),
            "seconds": args.seconds,
        }
    finally:
        for sock in sockets:
            sock.close()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--answers", type=int, default=5)
    parser.add_argument("--answer-mb", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--stall-timeout", type=int, default=10)
    parser.add_argument(
        "--rcvbuf", type=int, default=0, help="clients' SO_RCVBUF (0: the kernel's default)"
    )
    parser.add_argument("--src", default="", help="a source tree to run the server from")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
