"""Whole answers wait for the end of the loop's turn and go out together
(:mod:`chatscale.server.corked`), never out of order with anything else written to their
connection."""

from __future__ import annotations

import asyncio
import gc
import weakref

from chatscale.server.corked import CorkedTransport, turn_writer
from chatscale.server.protocol import HeadHoldingTransport
from tests.server.test_head_writes import Recorder


class Wire(Recorder):
    """A recording transport with an empty write buffer that can be aborted."""

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.closed = True


def corked() -> tuple[CorkedTransport, Wire]:
    recorder = Wire()
    return CorkedTransport(recorder, turn_writer(asyncio.get_running_loop())), recorder


async def test_answers_of_a_turn_go_out_at_its_end_together() -> None:
    (first, one), (second, two) = corked(), corked()
    first.write_later(b"A1")
    second.write_later(b"B1")
    first.write_later(b"A2")
    assert one.writes == [] and two.writes == []
    assert first.get_write_buffer_size() == 4
    await asyncio.sleep(0)
    assert one.writes == [[b"A1", b"A2"]] and two.writes == [[b"B1"]]
    await asyncio.sleep(0)
    assert one.writes == [[b"A1", b"A2"]]  # sent once


async def test_any_other_write_sends_what_waits_first() -> None:
    transport, recorder = corked()
    transport.write_later(b"answer")
    transport.write(b"refusal")
    transport.write_later(b"next")
    transport.writelines([b"x", b"y"])
    assert recorder.writes == [[b"answer"], [b"refusal"], [b"next"], [b"x", b"y"]]
    await asyncio.sleep(0)
    assert len(recorder.writes) == 4


async def test_close_sends_what_waits_and_abort_drops_it() -> None:
    transport, recorder = corked()
    transport.write_later(b"last answer")
    transport.close()
    assert recorder.writes == [[b"last answer"]] and recorder.closed
    other, dropped = corked()
    other.write_later(b"never")
    other.abort()
    await asyncio.sleep(0)
    assert dropped.writes == []


async def test_nothing_goes_to_a_connection_closed_meanwhile() -> None:
    transport, recorder = corked()
    transport.write_later(b"answer")
    recorder.close()  # the client went away
    await asyncio.sleep(0)
    assert recorder.writes == []


async def test_a_held_head_and_its_answer_wait_together() -> None:
    transport, recorder = corked()
    holding = HeadHoldingTransport(transport, asyncio.get_running_loop())
    holding.write(b"100 Continue")  # held, as a head is
    holding.write_later(b"whole answer")
    assert recorder.writes == []
    await asyncio.sleep(0)
    assert recorder.writes == [[b"100 Continuewhole answer"]]


def test_a_loop_that_is_gone_is_not_kept() -> None:
    # The writers are kept per loop, weakly: a writer holding its loop would keep every
    # closed loop (each test's, each worker's) alive.
    loop = asyncio.new_event_loop()
    turn_writer(loop)
    gone = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert gone() is None
