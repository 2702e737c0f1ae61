"""A response's head goes out with the first part of its body, in one write
(:class:`chatscale.server.protocol.HeadHoldingTransport`), and never out of order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from pathlib import Path

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

from chatscale.server.protocol import HeadHoldingTransport, refused
from tests.server.procs import ServeProcess


class Recorder(asyncio.Transport):
    """A transport that records each write (a list per system call) and the close."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[bytes]] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append([bytes(data)])

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.writes.append([bytes(data) for data in list_of_data])

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def holder() -> tuple[HeadHoldingTransport, Recorder]:
    recorder = Recorder()
    return HeadHoldingTransport(recorder, asyncio.get_running_loop()), recorder


async def test_the_head_and_the_first_body_part_are_one_write() -> None:
    transport, recorder = holder()
    transport.write(b"HEAD")
    assert recorder.writes == []
    transport.write(b"body")
    transport.write(b"more")
    assert recorder.writes == [[b"HEAD", b"body"], [b"more"]]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert recorder.writes == [[b"HEAD", b"body"], [b"more"]]


async def test_a_head_without_a_body_goes_out_at_the_next_turn() -> None:
    transport, recorder = holder()
    transport.write(b"HEAD")
    await asyncio.sleep(0)
    assert recorder.writes == [[b"HEAD"]]
    transport.write(b"later")
    assert recorder.writes == [[b"HEAD"], [b"later"]]


async def test_close_sends_the_held_head_first() -> None:
    transport, recorder = holder()
    transport.write(b"HEAD")
    transport.close()
    assert recorder.writes == [[b"HEAD"]] and recorder.closed
    assert transport.is_closing()
    await asyncio.sleep(0)
    assert recorder.writes == [[b"HEAD"]]


async def test_nothing_is_written_to_a_closed_connection() -> None:
    transport, recorder = holder()
    transport.write(b"HEAD")
    recorder.close()  # the client went away
    await asyncio.sleep(0)
    assert recorder.writes == []


async def test_pipelined_answers_after_a_head_request_stay_in_order(tmp_path: Path) -> None:
    # A HEAD answer has no body to carry its head: it goes out by itself, before the next.
    server = ServeProcess({}, tmp_path / "serve.log")
    server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(
                b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(-1), 10)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    finally:
        server.stop()
    first, second = raw.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and first.endswith(b"\r\n\r\n"), raw
    assert second.startswith(b"200 ") and second.endswith(b'{"status":"ok"}'), raw


def test_refused_headers_are_exactly_those_uvicorn_refuses() -> None:
    # send_whole's check must refuse what uvicorn's send would (it then falls back to send,
    # which raises), and nothing more: every byte, in a name and in a value, alone and
    # among good headers.
    good = [(b"content-type", b"text/plain"), (b"x-request-id", b"abc")]
    assert not refused([]) and not refused(good)
    for byte in range(256):
        one = bytes((byte,))
        name, value = (b"x-" + one + b"-y", b"v"), (b"x-y", b"a" + one + b"b")
        assert refused([*good, name]) == bool(HEADER_RE.search(name[0])), byte
        assert refused([value, *good]) == bool(HEADER_VALUE_RE.search(value[1])), byte


def test_every_request_id_is_a_header_value_uvicorn_allows() -> None:
    """Answers written whole put the request id on without checking it again."""
    from chatscale.server.requestid import _ACCEPTED, HEADER, request_id

    kept = bytes(b for b in range(256) if _ACCEPTED.fullmatch(bytes((b,))))
    assert len(kept) > 60
    assert not refused([(HEADER, kept)])
    made = request_id({"headers": []})
    assert not refused([(HEADER, made.encode())])
    assert request_id({"headers": [(HEADER, b"bad id\x01")]}) != "bad id\x01"
