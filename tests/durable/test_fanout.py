"""SSE readers that follow their stream's fan-out (``chatscale.durable.fanout``), on the
server's own HTTP protocol (the fan-out writes to connections directly): every reader gets
every record once and in order, through bursts bigger than a read, a reader too slow to
take them, a close and a delete; on Redis as in memory."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from chatscale.config import Settings, load_settings
from chatscale.durable.fanout import Fanout
from chatscale.durable.memory import MemoryStore
from chatscale.durable.model import AppendRequest, CreateRequest, ReadResult, Record
from chatscale.durable.offsets import Offset
from tests.conftest import unique_prefix
from tests.server.helpers import ServerThread

BASE = "/v1/stream"
PLAIN = {"Content-Type": "text/plain"}


def settings(**overrides: Any) -> Settings:
    return load_settings(
        durable_streams=True,
        durable_streams_auth="none",
        # The smallest read: a burst of appends is more than one read (the fan-out releases
        # its followers, which catch up alone).
        durable_streams_max_read=1024,
        session_secret="durable-fanout-test-secret-0123456789abcdef",
        **overrides,
    )


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    if request.param == "memory":
        chosen = settings()
    else:
        uri = str(request.getfixturevalue("redis_standalone").url())
        chosen = settings(use_redis=True, redis_uri=uri, redis_key_prefix=unique_prefix())
    with ServerThread(chosen) as running:
        yield running


@dataclass
class Reader:
    """A raw SSE reader: what its data events said, and its control events."""

    text: str = ""
    controls: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False

    @property
    def closed(self) -> bool:
        return bool(self.controls) and self.controls[-1].get("streamClosed") is True


#: The readers' connections the running test opened: closed after it, however it ends (a
#: connection left open would fail a later test, filterwarnings = error).
_OPENED: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def close_readers() -> AsyncIterator[None]:
    yield
    while _OPENED:
        _OPENED.pop().close()


async def open_reader(
    port: int, path: str, query: str = "offset=-1&live=sse", receive_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if receive_buffer is not None:
        # A small receive window, set before connecting: the server's writes back up.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    # A small read-ahead for a small window: the stream reader stops reading the socket
    # once it holds twice its limit.
    limit = 2**22 if receive_buffer is None else 2**14
    reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    _OPENED.append(writer)
    writer.write(f"GET {path}?{query} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    return reader, writer


async def consume(stream: asyncio.StreamReader, into: Reader, timeout_s: float = 30) -> None:
    """Read chunks and events until the server ends the response."""
    pending = b""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        size = int((await asyncio.wait_for(stream.readline(), left)).strip(), 16)
        chunk = await asyncio.wait_for(stream.readexactly(size + 2), left)
        if size == 0:
            into.ended = True
            return
        pending += chunk[:-2]
        *events, pending = pending.split(b"\n\n")
        for event in events:
            lines = event.decode().split("\n")
            kind = lines[0].removeprefix("event: ")
            data = "\n".join(line[5:] for line in lines[1:] if line.startswith("data:"))
            if kind == "data":
                into.text += data
            else:
                into.controls.append(json.loads(data))


async def until_following(durable: Any, count: int) -> None:
    """Until ``count`` readers follow (they read everything there was first)."""
    deadline = time.monotonic() + 10
    while durable.followers != count:
        assert time.monotonic() < deadline, durable.followers
        await asyncio.sleep(0.01)


async def metric(http: httpx.AsyncClient, line: str) -> float:
    """The value of the ``/metrics`` sample ``line`` (name and labels)."""
    text = (await http.get("/metrics")).text
    for sample in text.splitlines():
        if sample.startswith(line + " "):
            return float(sample.rsplit(" ", 1)[1])
    raise AssertionError(f"{line} not in /metrics")


def record(n: int, size: int = 100) -> bytes:
    return f"<{n:05d}>".encode().ljust(size, b".")


def check(reader: Reader, count: int, size: int = 100) -> None:
    expected = b"".join(record(n, size) for n in range(count)).decode()
    assert reader.text == expected, (len(reader.text), len(expected))
    # Each event moves the offset on, but the last may not: a close without records.
    offsets = [c["streamNextOffset"] for c in reader.controls]
    assert offsets == sorted(offsets) and len(set(offsets[:-1])) == len(offsets) - 1
    assert reader.closed and reader.ended


async def bursts_to_readers(server: ServerThread, path: str, following: int) -> None:
    """30 readers of ``path`` (``following`` of them following once they caught up), then
    appends in bursts, some bigger than a read, then a close without records: every reader
    gets every record once, in order, and the close."""
    durable = server.app.state.durable.app
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (await http.put(path, headers=PLAIN)).status_code == 201
        readers = [Reader() for _ in range(30)]
        streams = [await open_reader(server.port, path) for _ in readers]
        tasks = [
            asyncio.create_task(consume(s, r)) for (s, _), r in zip(streams, readers, strict=True)
        ]
        await until_following(durable, following)
        count = 0
        for burst in (1, 1, 3, 1, 20, 1, 2, 40, 1, 1):
            # A burst's appends go in order, without waiting for the readers.
            for _ in range(burst):
                answer = await http.post(path, headers=PLAIN, content=record(count))
                assert answer.status_code == 204
                count += 1
            await asyncio.sleep(0.02)
        closing = {**PLAIN, "Stream-Closed": "true"}
        assert (await http.post(path, headers=closing)).status_code == 204
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        if following:
            # Written by the fan-out, every follower let go by the close.
            assert await metric(http, "chatscale_durable_fanout_writes_total") > 0
            closed = 'chatscale_durable_fanout_releases_total{reason="closed"}'
            assert await metric(http, closed) == following
        assert await metric(http, "chatscale_durable_sse_followers") == 0
    for _, writer in streams:
        writer.close()
    for reader in readers:
        check(reader, count)
    assert durable.followers == 0


async def test_followers_get_every_record_once_in_order(server: ServerThread) -> None:
    await bursts_to_readers(server, f"{BASE}/fan", following=30)


async def test_readers_on_another_servers_protocol_read_alone() -> None:
    """Behind uvicorn's own protocol there is no direct writer: nobody follows, every
    reader waits and reads by itself, with the same events."""
    with ServerThread(settings(), edge=False) as server:
        await bursts_to_readers(server, f"{BASE}/alone", following=0)


async def test_a_reader_too_slow_to_take_the_events_still_gets_all(server: ServerThread) -> None:
    """Its connection's write buffer fills: the fan-out lets it go (its own writes wait for
    the socket) and goes on writing to the others; it catches up once it reads."""
    path = f"{BASE}/slow"
    durable = server.app.state.durable.app
    slow, fast = Reader(), Reader()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (await http.put(path, headers=PLAIN)).status_code == 201
        slow_stream, _ = await open_reader(server.port, path, receive_buffer=4096)
        fast_stream, _ = await open_reader(server.port, path)
        fast_task = asyncio.create_task(consume(fast_stream, fast))
        await until_following(durable, 2)
        # 8 MB: more than the kernel's socket buffers and uvicorn's high-water mark.
        count, size = 800, 10_000
        for n in range(count):
            answer = await http.post(path, headers=PLAIN, content=record(n, size))
            assert answer.status_code == 204
            if n % 20 == 0:
                await asyncio.sleep(0.005)
        # The fast reader kept up while the slow one read nothing.
        deadline = time.monotonic() + 30
        while len(fast.text) < count * size:
            assert time.monotonic() < deadline, len(fast.text)
            await asyncio.sleep(0.02)
        # The slow reader was let go: for its full buffer, or (on a loaded machine)
        # with every follower for a batch bigger than a read, after which its own
        # writes wait for its socket and it cannot follow again.
        await until_following(durable, 1)  # the fast one (back to following, if let go)
        assert await metric(http, "chatscale_durable_sse_followers") == 1
        released = 'chatscale_durable_fanout_releases_total{reason="%s"}'
        assert await metric(http, released % "slow") + await metric(http, released % "batch") >= 1
        closing = {**PLAIN, "Stream-Closed": "true"}
        assert (await http.post(path, headers=closing)).status_code == 204
        await consume(slow_stream, slow)
        await asyncio.wait_for(fast_task, 10)
    check(slow, count, size)
    check(fast, count, size)


async def test_readers_with_their_own_cursors_get_their_own(server: ServerThread) -> None:
    path = f"{BASE}/cursors"
    durable = server.app.state.durable.app
    held = 10**12  # a cursor from the future: each answer's must be larger (jitter)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (await http.put(path, headers=PLAIN)).status_code == 201
        plain, ahead = Reader(), Reader()
        one = await open_reader(server.port, path)
        two = await open_reader(server.port, path, f"offset=-1&live=sse&cursor={held}")
        tasks = [
            asyncio.create_task(consume(one[0], plain)),
            asyncio.create_task(consume(two[0], ahead)),
        ]
        await until_following(durable, 2)
        for n in range(3):
            assert (await http.post(path, headers=PLAIN, content=record(n))).status_code == 204
            await asyncio.sleep(0.05)
        closing = {**PLAIN, "Stream-Closed": "true"}
        assert (await http.post(path, headers=closing)).status_code == 204
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    one[1].close()
    two[1].close()
    check(plain, 3)
    check(ahead, 3)
    live = [c for c in plain.controls if "streamCursor" in c]
    assert live and all(int(c["streamCursor"]) < held for c in live)
    live = [c for c in ahead.controls if "streamCursor" in c]
    assert live and all(int(c["streamCursor"]) > held for c in live)


async def test_a_delete_ends_the_followers_streams(server: ServerThread) -> None:
    path = f"{BASE}/deleted"
    durable = server.app.state.durable.app
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (await http.put(path, headers=PLAIN, content=record(0))).status_code == 201
        readers = [Reader() for _ in range(3)]
        streams = [await open_reader(server.port, path) for _ in readers]
        tasks = [
            asyncio.create_task(consume(s, r)) for (s, _), r in zip(streams, readers, strict=True)
        ]
        await until_following(durable, len(readers))
        assert (await http.delete(path)).status_code == 204
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    for _, writer in streams:
        writer.close()
    for reader in readers:
        assert reader.ended and reader.text == record(0).decode()
    assert durable.followers == 0


class GatedReads(MemoryStore):
    """The memory store, whose reads wait for ``gate`` once it is cleared."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.reading = asyncio.Event()

    async def read(self, path: str, start: Offset | None, max_bytes: int) -> ReadResult:
        self.reading.set()
        await self.gate.wait()
        return await super().read(path, start, max_bytes)


@dataclass
class GatedFanout:
    """A fan-out of stream ``s`` of a :class:`GatedReads` store, one reader following it
    from the start, whose writes land in ``written``; the next reads are held (the gate
    is closed) and :meth:`appended` waits for the fan-out's read of what was appended."""

    store: GatedReads
    fanout: Fanout
    start: Offset
    following: asyncio.Task[Offset]
    written: list[bytes]

    @classmethod
    async def open(cls) -> GatedFanout:
        store = GatedReads()
        request = CreateRequest("text/plain", None, None, None, False, b"", None)
        created = await store.create("s", request)
        written: list[bytes] = []

        def write(frame: bytes) -> bool:
            written.append(frame)
            return True

        fanout = Fanout(store, "s", 1024, lambda result, cursor: b"frame", lambda _: None)
        start = created.info.tail
        following = asyncio.create_task(fanout.follow(start, None, None, write, 30))
        await asyncio.sleep(0)
        store.gate.clear()
        store.reading.clear()
        return cls(store, fanout, start, following, written)

    async def appended(self, *records: bytes) -> None:
        for data in records:
            request = AppendRequest("text/plain", Record(data, 1), None, None, False)
            await self.store.append("s", request)
        await asyncio.wait_for(self.store.reading.wait(), 5)


async def test_a_drain_during_a_read_releases_its_followers() -> None:
    """The followers of a read under way are out of the waiting groups: a drain must
    release them too, or they would stay parked until their deadline."""
    gated = await GatedFanout.open()
    await gated.appended(b"x")
    gated.fanout.release_all()  # the drain, while the fan-out reads
    gated.store.gate.set()
    assert await asyncio.wait_for(gated.following, 5) == gated.start
    assert gated.written == []
    assert gated.fanout.stats.released["stopped"] == 1
    await gated.fanout.stop()


async def test_a_batch_bigger_than_a_read_releases_the_followers() -> None:
    """They catch up by themselves, read after read; the fan-out writes nothing of it."""
    gated = await GatedFanout.open()
    await gated.appended(*(record(n) for n in range(20)))  # 2,000 bytes: two reads of 1,024
    gated.store.gate.set()
    assert await asyncio.wait_for(gated.following, 5) == gated.start
    assert gated.written == []
    assert gated.fanout.stats.released["batch"] == 1
    await gated.fanout.stop()
