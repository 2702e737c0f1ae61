"""Errors raised by resumable streams for bad input or impossible requests."""

from __future__ import annotations

from chatscale.errors import ChatscaleError


class StreamError(ChatscaleError):
    """Base class of every resumable-stream error."""


class InvalidEventId(StreamError, ValueError):
    """An event id is malformed, or names an event that is not in the job's log.

    Never answered by a silent replay from the start: the client asked for a position that
    does not exist, and must be told so.
    """

    def __init__(self, job_id: str, event_id: object, problem: str) -> None:
        self.job_id = job_id
        self.event_id = event_id
        self.problem = problem
        super().__init__(f"event id {event_id!r} of job {job_id!r}: {problem}")


class JobNotFound(StreamError, LookupError):
    """No such job (or it expired, or it belongs to another user: the cases look alike)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} not found")


class JobExists(StreamError, ValueError):
    """``create`` was given the id of a job that already exists."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} already exists")


class TooManyListeners(StreamError):
    """A job already has ``REDIS_MAX_LISTENERS`` subscribers on this instance."""

    def __init__(self, job_id: str, limit: int) -> None:
        self.job_id = job_id
        self.limit = limit
        super().__init__(
            f"job {job_id!r} already has {limit} subscribers on this instance (REDIS_MAX_LISTENERS)"
        )


class InvalidEvent(StreamError, ValueError):
    """A producer was given an event that cannot be stored (bad type, not JSON...)."""


class ManagerClosed(StreamError):
    """The stream manager is closed (or draining) and takes no new work."""
