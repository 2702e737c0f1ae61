"""How an event stream's frames are written: their encoding, the body sent past the
middleware chain (chatscale.server.shortcut), and the stall timeout watched by one timer
instead of a timeout scope per frame."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatscale.server.shortcut import SCOPE_KEY
from chatscale.server.sse import EventStream, Streams, encode, frame
from chatscale.streams import Event

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _reference(event: str, data: Any, event_id: str | None, retry: int | None) -> bytes:
    """The frame as the standard library writes it (what clients have always received)."""
    parts = [f"id: {event_id}\n"] if event_id is not None else []
    if retry is not None:
        parts.append(f"retry: {retry}\n")
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    parts.append(f"event: {event}\ndata: {payload}\n\n")
    return "".join(parts).encode()


@given(
    st.sampled_from(["delta", "done", "tool", "reconnect"]),
    st.dictionaries(st.text(), JSON, max_size=4),
    st.none() | st.integers(min_value=1, max_value=10**18).map(str),
    st.none() | st.integers(min_value=0, max_value=10**6),
)
def test_frames_are_byte_for_byte_the_standard_encoding(
    event: str, data: dict[str, Any], event_id: str | None, retry: int | None
) -> None:
    assert frame(event, data, event_id, retry) == _reference(event, data, event_id, retry)


@given(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    st.integers(min_value=1, max_value=10**18).map(str),
)
def test_delta_frames_are_byte_for_byte_the_standard_encoding(text: str, event_id: str) -> None:
    event = Event(event_id, "delta", {"text": text})
    assert encode(event) == _reference("delta", {"text": text}, event_id, None)


def test_a_final_event_goes_out_without_the_text() -> None:
    done = encode(Event("9", "done", {"text": "é\u2028\x00", "finish_reason": "stop"}))
    assert done == b'id: 9\nevent: done\ndata: {"finish_reason":"stop"}\n\n'
    delta = encode(Event("3", "delta", {"text": 'a "b" é\n'}))
    assert delta == 'id: 3\nevent: delta\ndata: {"text":"a \\"b\\" é\\n"}\n\n'.encode()


async def _frames(count: int) -> AsyncIterator[bytes]:
    for n in range(count):
        yield frame("delta", {"text": f"t{n} "}, str(n + 1))


async def _never_disconnect() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


class Recorder:
    """A ``send`` that records its messages (optionally waiting before each)."""

    def __init__(self, delay: float = 0.0, hang_at: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.delay = delay
        self.hang_at = hang_at

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if self.hang_at is not None and len(self.messages) == self.hang_at:
            await asyncio.Event().wait()  # a client that stopped reading: the send never ends
        if self.delay:
            await asyncio.sleep(self.delay)
        self.messages.append(dict(message))


async def test_the_body_goes_past_the_chain_and_head_and_end_through_it() -> None:
    chain, direct = Recorder(), Recorder()
    stream = EventStream(_frames(5), Streams(), first=b"first", stall_timeout_s=5)
    scope = {"type": "http", SCOPE_KEY: direct}
    await stream(scope, _never_disconnect, chain)
    kinds = [(m["type"], m.get("more_body")) for m in chain.messages]
    assert kinds == [
        ("http.response.start", None),
        ("http.response.body", True),  # retry + first frame
        ("http.response.body", False),  # the end
    ]
    assert chain.messages[1]["body"].endswith(b"first")
    assert [m["body"] for m in direct.messages] == [c async for c in _frames(5)]
    assert all(m["more_body"] for m in direct.messages)


async def test_without_the_shortcut_everything_goes_through_send() -> None:
    chain = Recorder()
    await EventStream(_frames(3), Streams(), stall_timeout_s=5)(
        {"type": "http"}, _never_disconnect, chain
    )
    assert len(chain.messages) == 2 + 3 + 1


async def test_a_send_that_never_completes_drops_the_client_after_the_stall_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    direct = Recorder(hang_at=2)
    stream = EventStream(_frames(10), Streams(), stall_timeout_s=0.3)
    began = time.monotonic()
    async with asyncio.timeout(5):
        await stream({"type": "http", SCOPE_KEY: direct}, _never_disconnect, Recorder())
    assert 0.25 <= time.monotonic() - began < 2
    assert len(direct.messages) == 2
    assert "SSE_STALL_TIMEOUT" in caplog.text


async def test_slow_sends_that_each_complete_in_time_are_not_a_stall() -> None:
    # Every send takes 0.1 s, the whole stream 1 s: far longer than the 0.25 s timeout,
    # which bounds one send, not the stream.
    direct = Recorder(delay=0.1)
    stream = EventStream(_frames(10), Streams(), stall_timeout_s=0.25)
    chain = Recorder()
    async with asyncio.timeout(10):
        await stream({"type": "http", SCOPE_KEY: direct}, _never_disconnect, chain)
    assert len(direct.messages) == 10
    assert chain.messages[-1]["more_body"] is False
