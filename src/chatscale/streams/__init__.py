"""Resumable streams: generation jobs whose event logs outlive every connection.

A job is one AI response being produced: a producer appends events (text deltas, status or
tool events, exactly one final event) and any number of subscribers, on any instance, read
from any position with exactly-once, in-order delivery. See docs/streams.md.
"""

from chatscale.streams.base import EventSink, StreamManager
from chatscale.streams.errors import (
    InvalidEvent,
    InvalidEventId,
    JobExists,
    JobNotFound,
    ManagerClosed,
    StreamError,
    TooManyListeners,
)
from chatscale.streams.factory import create_stream_manager
from chatscale.streams.memory import MemoryStreamManager
from chatscale.streams.metrics import StreamMetrics
from chatscale.streams.model import FINAL_TYPES, Event, JobInfo, JobStatus, parse_event_id
from chatscale.streams.producer import Producer
from chatscale.streams.runner import Continuation, ProducerStep, run

__all__ = [
    "FINAL_TYPES",
    "Continuation",
    "Event",
    "EventSink",
    "InvalidEvent",
    "InvalidEventId",
    "JobExists",
    "JobInfo",
    "JobNotFound",
    "JobStatus",
    "ManagerClosed",
    "MemoryStreamManager",
    "Producer",
    "ProducerStep",
    "StreamError",
    "StreamManager",
    "StreamMetrics",
    "TooManyListeners",
    "create_stream_manager",
    "parse_event_id",
    "run",
]
