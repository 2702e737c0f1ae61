"""What the Redis backend keeps about jobs: a producer's unarchived state, a job hash as
read, and a subscriber's position."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from chatscale.streams import codec
from chatscale.streams.fanout import Record
from chatscale.streams.model import Event, JobStatus
from chatscale.streams.producer import Producer

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Live:
    """What this instance keeps of a job it produces, until the job ends (reconciliation)."""

    producer: Producer
    events: list[Event] = field(default_factory=list)
    archived: int = 0
    archive_at: float = 0.0
    tail: str = "0-0"
    #: The tail recorded in the job hash: the instance log must keep everything after it.
    stored_tail: str = "0-0"
    touched: float = field(default_factory=time.monotonic)
    busy: bool = False
    done: asyncio.Future[None] | None = None


@dataclass(slots=True)
class JobRecord:
    """A job hash as read from Redis."""

    job_id: str
    owner: str
    meta: dict[str, Any]
    instance: str
    status: JobStatus
    epoch: int
    archived: int
    tail: str
    created_at: float
    updated_at: float

    @classmethod
    def parse(cls, job_id: str, raw: dict[bytes, bytes]) -> JobRecord | None:
        if not raw or b"owner" not in raw:
            return None
        get = raw.get
        try:
            return cls(
                job_id=job_id,
                owner=raw[b"owner"].decode(),
                meta=codec.loads(get(b"meta", b"{}")),
                instance=get(b"inst", b"").decode(),
                status=JobStatus(get(b"status", b"running").decode()),
                epoch=int(get(b"epoch", b"1")),
                archived=int(get(b"aseq", b"0")),
                tail=get(b"tail", b"0-0").decode(),
                created_at=float(get(b"created", b"0")),
                updated_at=float(get(b"updated", b"0")),
            )
        except (ValueError, KeyError):
            log.warning("job %s has a corrupt hash; treating it as missing", job_id)
            return None


class Follow:
    """A subscriber's position: delivers each sequence number once, in order."""

    __slots__ = (
        "confirm_by",
        "epoch",
        "gaps",
        "job_id",
        "last",
        "patience",
        "position",
        "texts",
        "top",
        "unconfirmed",
    )

    def __init__(self, job_id: str, position: int, epoch: int) -> None:
        self.job_id = job_id
        self.position = position
        self.last = position
        self.epoch = epoch
        self.gaps = False
        self.top = 0
        #: Idle checks of silence before the next re-read of the job (grows while silent).
        self.patience = 1
        #: A resume position not (yet) in the log of a moved job: looked for again until
        #: ``confirm_by`` (``time.monotonic``; 0 = not started).
        self.unconfirmed = False
        self.confirm_by = 0.0
        self.texts: list[str] = []

    def deliver(self, event: Event) -> None:
        self.last = int(event.id)
        if event.type == "delta":
            self.texts.append(event.data["text"])

    def accept(self, record: Record) -> list[Event | None]:
        """The new events of a record; ``None`` at the end means "re-read from the log"."""
        _, epoch, first, items = record
        if first < 0:
            return [None] if epoch > self.epoch else []  # the job moved: re-read
        if epoch < self.epoch:
            return []  # a fenced-off former owner
        self.epoch = epoch
        end = first + len(items) - 1
        if end > self.top:
            self.top = end
        start = self.last + 1
        if end < start:
            return []
        if first > start:
            self.gaps = True
            return [None]
        if first < start:
            items = items[start - first :]
        self.last = end
        texts = self.texts
        for item in items:
            if isinstance(item, str):
                texts.append(item)
        out: list[Event | None] = []
        out.extend(codec.unpack(start, items))
        return out
