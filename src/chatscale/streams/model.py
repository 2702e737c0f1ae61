"""The data of resumable streams: job status, events, job info and event ids.

Event ids are the event's sequence number in its job's log as a decimal string: ``"1"`` is
the first event, ``"2"`` the second... They are compact, ordered, valid SSE ``id:`` values,
and numbering continues across a takeover (the new owner goes on from the last id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from chatscale.numbers import parse_whole
from chatscale.streams.errors import InvalidEvent, InvalidEventId

#: Types of the final events; exactly one of them ends every job's log.
FINAL_TYPES = frozenset({"done", "aborted", "error"})
#: Longest accepted event id (a sequence number below 10**18).
_MAX_ID_DIGITS = 18
_MAX_TYPE_LEN = 64


class JobStatus(StrEnum):
    """Where a generation job stands."""

    RUNNING = "running"
    COMPLETE = "complete"
    ABORTED = "aborted"
    ERROR = "error"


FINAL_STATUS = {"done": JobStatus.COMPLETE, "aborted": JobStatus.ABORTED, "error": JobStatus.ERROR}


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a job's log.

    ``type`` is ``"delta"`` (``data = {"text": str}``), any status / tool event type with a
    JSON object as ``data``, or one of the final types: ``"done"`` (``{"text": whole answer,
    "finish_reason": str}``), ``"aborted"`` (``{"text": partial}``) and ``"error"``
    (``{"message": str, "text": partial}``).
    """

    id: str
    type: str
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        """Whether this event ends the job's log."""
        return self.type in FINAL_TYPES

    @property
    def seq(self) -> int:
        """The event's position in its log (1-based)."""
        return int(self.id)


@dataclass(slots=True)
class JobInfo:
    """A snapshot of one job: who may read it, how far it got, and the text so far."""

    job_id: str
    owner: str
    status: JobStatus
    created_at: float
    updated_at: float
    meta: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    last_event_id: str | None = None

    @property
    def active(self) -> bool:
        """Whether the job is still producing."""
        return self.status is JobStatus.RUNNING


def text_of(events: list[Event]) -> str:
    """An answer's text: its delta events' text, joined (the one place it is rebuilt)."""
    return "".join(str(e.data["text"]) for e in events if e.type == "delta")


def status_of(final_type: str) -> JobStatus:
    """The status a final event of ``final_type`` gives its job."""
    return FINAL_STATUS.get(final_type, JobStatus.ERROR)


def parse_event_id(job_id: str, event_id: object) -> int:
    """The sequence number an event id stands for; ``None``, ``""`` and ``"0"`` mean 0.

    Raises :class:`InvalidEventId` for anything that is not a plain decimal sequence number.
    """
    if event_id is None:
        return 0
    if not isinstance(event_id, str):
        raise InvalidEventId(job_id, event_id, "must be a string")
    text = event_id.strip()
    if text in ("", "0"):
        return 0
    sequence = parse_whole(text, max_digits=_MAX_ID_DIGITS)
    if sequence is None or text[0] == "0":
        raise InvalidEventId(
            job_id, event_id, "malformed; expected a decimal sequence number like '42'"
        )
    return sequence


def check_event(type_: object, data: object) -> str:
    """Validate a producer's event; returns its compact JSON encoding of ``data``."""
    if not isinstance(type_, str) or not type_ or len(type_) > _MAX_TYPE_LEN:
        raise InvalidEvent(f"event type must be a non-empty string of at most {_MAX_TYPE_LEN}")
    if type_ in FINAL_TYPES or type_ == "delta":
        raise InvalidEvent(
            f"event type {type_!r} is reserved; use delta(), complete(), fail() or abort()"
        )
    if not isinstance(data, dict):
        raise InvalidEvent(f"event data must be a JSON object, not {type(data).__name__}")
    try:
        # The standard encoder refuses NaN / infinities; orjson (the wire format) refuses
        # integers beyond 64 bits: data must pass both to be stored exactly.
        json.dumps(data, allow_nan=False)
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"event {type_!r} data is not JSON: {exc}") from exc
