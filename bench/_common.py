"""Shared pieces of the benchmarks: workloads, chunk stamps, statistics, a private Redis.

The streams workloads are those of the shared WORKLOADS list (see docs/benchmarks.md):
every chunk is 16 bytes, 13 digits of a monotonic microsecond clock taken when the producer
hands the chunk over, then ``tok``; latency is the consumer's clock minus that stamp.
"""

from __future__ import annotations

import math
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

CHUNK_BYTES = 16
STAMP_DIGITS = 13
TAIL = "tok"
_CHUNK = re.compile(rf"([0-9]{{{STAMP_DIGITS}}}){TAIL}")
#: A paced run "kept up" when its last chunk arrived within this factor of the ideal time.
KEPT_UP_FACTOR = 1.10


@dataclass(frozen=True)
class Workload:
    """One streams workload: ``streams`` producers of ``chunks`` chunks each."""

    name: str
    streams: int
    chunks: int
    rate: float | None  # chunks/s per producer; None = as fast as possible
    consumers: int  # consumers per stream
    replay: bool  # read one finished stream from its start (workload c)

    @property
    def ideal_s(self) -> float | None:
        """Time a paced workload needs when nothing falls behind."""
        return None if self.rate is None else self.chunks / self.rate

    def scaled(self, factor: float) -> Workload:
        """A smaller copy (for smoke tests); the shape and pacing stay the same."""
        if not 0 < factor <= 1:
            raise ValueError(f"--scale must be in (0, 1], got {factor}")
        if factor == 1:
            return self
        return Workload(
            self.name,
            max(1, round(self.streams * factor)),
            max(2, round(self.chunks * factor)),
            self.rate,
            self.consumers,
            self.replay,
        )


WORKLOADS: dict[str, Workload] = {
    "a": Workload("a", 100, 1_000, None, 1, False),
    "b": Workload("b", 500, 200, 50.0, 1, False),
    "b100": Workload("b100", 100, 200, 50.0, 1, False),
    "c": Workload("c", 1, 20_000, None, 1, True),
    "m": Workload("m", 500, 200, 50.0, 3, False),
}


def now_us() -> int:
    """The monotonic microsecond clock every producer and consumer of a run shares."""
    return time.monotonic_ns() // 1000


def make_chunk(stamp_us: int) -> str:
    """One 16-byte chunk: the stamp on 13 digits, then ``tok``."""
    return f"{stamp_us:013d}{TAIL}"


class ChunkError(ValueError):
    """A consumer received text that is not a whole number of well-formed chunks."""


def read_stamps(text: str) -> list[int]:
    """The stamps of the chunks in ``text`` (one message may carry several chunks)."""
    return list(map(int, read_stamp_digits(text)))


def read_stamp_digits(text: str) -> list[str]:
    """The stamps of the chunks in ``text`` as their 13 digits (fixed width: they sort as
    the numbers do)."""
    # Validated and split by one regular expression (C speed): the harness's parsing is
    # paid by every system alike and should be small next to what it measures.
    if len(text) == CHUNK_BYTES:  # the common case of paced producers: one chunk
        match = _CHUNK.fullmatch(text)
        if match is None:
            raise ChunkError(f"malformed chunk {text!r}")
        return [match.group(1)]
    if len(text) % CHUNK_BYTES:
        raise ChunkError(f"received {len(text)} characters, not a multiple of {CHUNK_BYTES}")
    digits = _CHUNK.findall(text)
    if len(digits) * CHUNK_BYTES != len(text):
        for start in range(0, len(text), CHUNK_BYTES):
            piece = text[start : start + CHUNK_BYTES]
            if not _CHUNK.fullmatch(piece):
                raise ChunkError(f"malformed chunk {piece!r}")
    return digits


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


@dataclass
class Usage:
    """CPU seconds of this process (user + system) and its peak RSS so far."""

    cpu_s: float
    peak_rss_mb: float

    @classmethod
    def now(cls) -> Usage:
        """Read ``getrusage(RUSAGE_SELF)``; ``ru_maxrss`` is in KiB on Linux."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def commands_total(commandstats: dict[str, Any]) -> int:
    """Commands counted by ``INFO commandstats``, less the benchmark's own INFO and CONFIG."""
    total = 0
    for name, stats in commandstats.items():
        command = name.removeprefix("cmdstat_").split("|")[0].lower()
        if command in {"info", "config"}:
            continue
        calls = stats.get("calls", 0) if isinstance(stats, dict) else 0
        total += int(calls)
    return total


def setting_overrides(pairs: list[str]) -> dict[str, str]:
    """``--setting NAME=VALUE`` pairs as settings overrides (names lower-cased)."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--setting expects NAME=VALUE, got {pair!r}")
        overrides[name.strip().lower()] = value
    return overrides


def median(values: list[float]) -> float:
    """The median (mean of the middle two for an even count)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throw-away ``redis-server`` on a free loopback port (never 6379), no persistence."""

    def __init__(self) -> None:
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>``."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH; pass --redis-url instead")
        self._dir = tempfile.TemporaryDirectory(prefix="chatscale-bench-")
        for _ in range(5):
            self.port = _free_port()
            if self.port == 6379:
                continue
            argv = [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--logfile", str(Path(self._dir.name) / "redis.log"),
            ]  # fmt: skip
            self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            if self._wait_ready(timeout_s):
                return
            self._kill()
        raise RuntimeError("could not start redis-server on a free port")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def stop(self) -> None:
        """Stop the server and remove its directory (idempotent)."""
        self._kill()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def plain_redis_py(config: Any) -> Redis:
    """A standalone client of ``config`` (a ``RedisConfig``) as chatscale builds it (pool,
    timeouts, retries), but with redis-py's own connection class, which packs commands in
    Python: the plain redis-py baseline of the benchmarks (chatscale's clients pack with
    hiredis, :mod:`chatscale.redis.connections`)."""
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.connection import Connection

    from chatscale.redis import create_client
    from chatscale.redis.connections import PackingConnection

    pool: Any = create_client(config).connection_pool  # type: ignore[union-attr]
    assert pool.connection_class is PackingConnection, "standalone, without TLS, only"
    plain = BlockingConnectionPool(
        connection_class=Connection,
        max_connections=pool.max_connections,
        timeout=pool.timeout,
        **pool.connection_kwargs,
    )
    return Redis.from_pool(plain)
