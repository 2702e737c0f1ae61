"""Pure pieces: event ids, the codec, a subscriber's position."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatscale.redis.keys import KeySpace
from chatscale.streams import Event, InvalidEventId, parse_event_id
from chatscale.streams.backlog import FIRST_CHUNKS, IDLE_S, PRESSURE_CHUNKS, Backlog
from chatscale.streams.codec import pack, unpack
from chatscale.streams.redis_liveness import Liveness
from chatscale.streams.redis_reader import Follow as _Follow


@pytest.mark.parametrize(("raw", "seq"), [(None, 0), ("", 0), ("0", 0), ("7", 7), (" 12 ", 12)])
def test_event_ids_parse(raw: str | None, seq: int) -> None:
    assert parse_event_id("j", raw) == seq


@pytest.mark.parametrize("raw", ["x", "-3", "007", "1e3", "²", "1 2", 5, 1.0])
def test_bad_event_ids_name_the_problem(raw: object) -> None:
    with pytest.raises(InvalidEventId, match="event id"):
        parse_event_id("j", raw)


@given(
    st.lists(
        st.one_of(
            st.text(min_size=1),
            st.dictionaries(st.text(), st.integers(min_value=-(2**63), max_value=2**64 - 1)),
        )
    )
)
def test_codec_round_trips(items: list[object]) -> None:
    events = [
        Event(str(i + 5), "delta", {"text": x})
        if isinstance(x, str)
        else Event(str(i + 5), "tool", x)  # type: ignore[arg-type]
        for i, x in enumerate(items)
    ]
    assert unpack(5, pack(events, final_text=True)) == events


def test_archived_final_events_leave_the_text_out() -> None:
    events = [
        Event("1", "delta", {"text": "ab"}),
        Event("2", "done", {"text": "ab", "finish_reason": "stop"}),
    ]
    assert pack(events, final_text=False) == ["ab", ["done", {"finish_reason": "stop"}]]


def test_follow_keeps_ids_across_overlapping_records() -> None:
    follow = _Follow("j", 2)
    record = [1, 1, ["a", "b", "c", "d"]]
    got = follow.accept(record)
    assert got is not None
    assert [e.id for e in got] == ["3", "4"]
    assert [e.data["text"] for e in got] == ["c", "d"]
    assert follow.accept(record) == []  # nothing twice
    assert follow.accept([1, 7, ["x"]]) is None  # a gap: re-read the log
    assert follow.accept([2, 5, ["e"]]) == [Event("5", "delta", {"text": "e"})]
    assert "".join(follow.texts) == "cde"


@pytest.mark.parametrize(
    "data", [{"n": 2**70}, {"x": float("nan")}, {"x": float("inf")}, {"k": {1, 2}}]
)
def test_event_data_that_cannot_be_stored_exactly_is_refused(data: dict[str, object]) -> None:
    from chatscale.streams import InvalidEvent
    from chatscale.streams.model import check_event

    with pytest.raises(InvalidEvent, match="not JSON"):
        check_event("tool", data)


def test_a_claimer_needs_two_leases_of_its_own_contact() -> None:
    """Checker cluster seed 3011: an instance back in contact for one lease after a Cluster
    failover judged dead two living instances that had not yet rediscovered the slot map."""

    async def claim(instance: str, job_id: str) -> None:
        raise AssertionError("not called")

    liveness = Liveness(
        None,
        KeySpace("p"),
        instance_id="i",
        lease_s=1.5,
        jobs_ttl_s=60,
        claim=claim,
        local_jobs=set,
    )
    now = 1_000_000
    assert not liveness.may_claim(now)  # never in contact
    liveness.last_beat = now
    liveness._last_beat_mono = time.monotonic()
    liveness.contact_since = now - 1_600  # one lease (and a bit)
    assert not liveness.may_claim(now)
    liveness.contact_since = now - 3_000  # two leases
    assert liveness.may_claim(now)
    liveness._last_beat_mono = time.monotonic() - 5  # the last beat is stale
    assert not liveness.may_claim(now)


def test_backpressure_starts_small_after_idle_and_grows_per_flush() -> None:
    now = [100.0]
    backlog = Backlog(lambda: None, _never, coalesce_s=0.002, clock=lambda: now[0])
    producer: Any = object()
    windows = []
    for _ in range(6):
        backlog.dirty(producer)
        windows.append(backlog.pressure_chunks)
        backlog.buffered = backlog.pressure_chunks
        assert backlog.pressing(check_age=False)
        backlog.take()
        now[0] += 0.01
    assert windows == [FIRST_CHUNKS, 256, 512, PRESSURE_CHUNKS, PRESSURE_CHUNKS, PRESSURE_CHUNKS]
    # A writer idle for longer than IDLE_S starts again from the small window; a shorter
    # pause does not.
    now[0] += IDLE_S / 2
    backlog.dirty(producer)
    assert backlog.pressure_chunks == PRESSURE_CHUNKS
    backlog.take()
    now[0] += IDLE_S * 1.5
    backlog.dirty(producer)
    assert backlog.pressure_chunks == FIRST_CHUNKS
    backlog.buffered = FIRST_CHUNKS - 1
    assert not backlog.pressing(check_age=False)
    # A smaller maximum (set for latency) bounds the windows from the start.
    backlog.max_chunks = 64
    backlog.take()
    now[0] += IDLE_S * 1.5
    backlog.dirty(producer)
    assert backlog.pressure_chunks == 64
    backlog.take()
    assert backlog.pressure_chunks == 64


async def _never() -> None:
    raise AssertionError("not waited for here")
