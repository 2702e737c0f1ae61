"""The one status vocabulary of the API: ``running``, ``done``, ``aborted``, ``error``.

The same words name a stream's final event (``event: done``), ``GET .../status``, the
active list, the ``ended`` announcements of ``GET /api/events`` and the status of a stored
answer. The stream engine keeps its own names (``JobStatus``, whose values are stored in
Redis): this module is the one place that translates them.
"""

from __future__ import annotations

from typing import Literal

from chatscale.streams import JobStatus

#: What a stream or a stored answer can be, as the API says it.
ApiStatus = Literal["running", "done", "aborted", "error"]
#: The statuses of an answer that has ended (a stored answer has one of these).
EndStatus = Literal["done", "aborted", "error"]

_NAMES: dict[JobStatus, ApiStatus] = {
    JobStatus.RUNNING: "running",
    JobStatus.COMPLETE: "done",
    JobStatus.ABORTED: "aborted",
    JobStatus.ERROR: "error",
}


def api_status(status: JobStatus) -> ApiStatus:
    """The API's word for a stream engine status."""
    return _NAMES[status]


def end_status(status: JobStatus) -> EndStatus:
    """The API's word for how an answer ended (a job still running counts as ``error``:
    only an ended job is recorded, so that would be a fault worth seeing)."""
    name = _NAMES[status]
    return "error" if name == "running" else name
