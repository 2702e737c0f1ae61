"""The one API of resumable streams, shared by the memory and the Redis backends."""

from __future__ import annotations

import abc
import asyncio
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chatscale import logcontext
from chatscale.streams.backlog import Backlog
from chatscale.streams.errors import InvalidEvent, ManagerClosed
from chatscale.streams.metrics import StreamMetrics
from chatscale.streams.model import Event, JobInfo
from chatscale.streams.producer import Producer
from chatscale.streams.runner import Continuation, ProducerStep, run
from chatscale.tasks import stop_task

#: Takes one live event now (``True``) or declines it (``False``): see
#: :meth:`StreamManager.subscribe`.
EventSink = Callable[[Event], bool]

if TYPE_CHECKING:
    from chatscale.config import Settings

log = logging.getLogger(__name__)

#: Called with a producer whose final event is stored (see :meth:`StreamManager.set_recorder`).
Recorder = Callable[[Producer], Awaitable[None]]

_MAX_JOB_ID = 200


def check_job_id(job_id: object) -> str:
    """Validate a caller-supplied job id."""
    if not isinstance(job_id, str) or not job_id or len(job_id) > _MAX_JOB_ID:
        raise InvalidEvent(f"job id must be a non-empty string of at most {_MAX_JOB_ID} chars")
    if not job_id.isprintable():
        raise InvalidEvent("job id must not contain control characters")
    return job_id


def check_owner(owner: object) -> str:
    """Validate a job owner (the session user allowed to read the job)."""
    if not isinstance(owner, str) or not owner or len(owner) > _MAX_JOB_ID:
        raise InvalidEvent(f"owner must be a non-empty string of at most {_MAX_JOB_ID} chars")
    return owner


class StreamManager(abc.ABC):
    """Creates jobs and serves their logs to any number of subscribers.

    Producer side: :meth:`create` returns a :class:`Producer`. Subscriber side:
    :meth:`subscribe` (replay from a position, then follow live), :meth:`status`,
    :meth:`list_active`, :meth:`abort`. :meth:`set_continuation` registers how a job is
    continued after a takeover; :meth:`drain` hands jobs over at shutdown.
    """

    #: ``STREAM_DELTA_COALESCE_MS`` when it is not set: a backend's own trade-off between a
    #: delta's latency and the writes it saves.
    default_coalesce_ms: int = 1

    def __init__(self, settings: Settings, *, instance_id: str | None = None) -> None:
        self.settings = settings
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.metrics = StreamMetrics()
        self.max_events = settings.stream_max_events
        self.max_bytes = settings.stream_max_bytes
        window_ms = settings.stream_delta_coalesce_ms
        if window_ms is None:
            window_ms = self.default_coalesce_ms
        self.coalesce_s = window_ms / 1000
        self.max_listeners = settings.redis_max_listeners
        self.replay_page = settings.stream_replay_page
        self.subscriber_buffer = settings.stream_subscriber_buffer
        self.running_ttl = settings.stream_running_ttl
        #: A producer silent this long (seconds) is ended with ``error`` (STREAM_RUNNING_TTL).
        self.stall_s: float = float(settings.stream_running_ttl)
        self.finished_ttl = settings.stream_finished_ttl
        #: What producers buffered for the writer (and the backpressure on fast ones).
        self.backlog = Backlog(self._schedule_flush, self._relieve, coalesce_s=self.coalesce_s)
        self._continuation: Continuation | None = None
        self._recorder: Recorder | None = None
        self._producers: dict[str, Producer] = {}
        self._runs: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._draining = False

    # --- lifecycle ----------------------------------------------------------------------
    @abc.abstractmethod
    async def start(self) -> None:
        """Start background tasks (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop background tasks and release everything (idempotent).

        Jobs still running are left as they are: call :meth:`drain` first to hand them over.
        """

    async def __aenter__(self) -> StreamManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- producer side ------------------------------------------------------------------
    @abc.abstractmethod
    async def create(
        self, *, owner: str, meta: dict[str, Any] | None = None, job_id: str | None = None
    ) -> Producer:
        """Register a new running job and return its producer.

        ``meta`` (JSON object) carries the conversation id, model and whatever a
        continuation needs to resume the generation. Raises ``JobExists`` for a taken id.
        """

    def set_continuation(self, fn: Continuation | None) -> None:
        """Register how to continue a job another instance stopped producing.

        ``fn(info)`` gets the job (``info.meta`` as given to :meth:`create`, ``info.text``
        the text so far) and returns an async iterator of steps (``str`` deltas or objects
        with ``text`` / ``event`` / ``data`` / ``finish_reason``, like
        :class:`chatscale.llm.base.Chunk`) producing the *rest* of the answer. Without a
        continuation (or with ``STREAM_TAKEOVER=false``) an orphaned job ends with ``error``.
        """
        self._continuation = fn

    def run(
        self, producer: Producer, steps: AsyncIterator[ProducerStep | str]
    ) -> asyncio.Task[Any]:
        """Feed ``steps`` into ``producer`` in a task tracked by :meth:`drain`.

        The task cancels the steps (the provider call) when the job is aborted from any
        instance, completes the job when they end and fails it when they raise.
        """
        # Every line logged while producing this answer names it.
        context = contextvars.copy_context()
        context.run(logcontext.stream_id.set, producer.job_id)
        task = asyncio.get_running_loop().create_task(run(producer, steps), context=context)
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return task

    # --- subscriber side ----------------------------------------------------------------
    @abc.abstractmethod
    def subscribe(
        self,
        job_id: str,
        *,
        after: str | None = None,
        owner: str | None = None,
        sink: EventSink | None = None,
    ) -> AsyncIterator[Event]:
        """Yield the events after ``after`` (all when ``None``), then follow live until the
        final event.

        ``sink``, where the backend supports it (in memory), is handed each live event
        but the final one synchronously as it is stored, once the subscriber has caught
        up: an event it takes (``True``) is not yielded; one it declines is yielded next,
        and the sink is offered events again once the subscriber has caught up again.
        Other backends yield every event. Either way the subscriber sees every event once,
        in order.

        Raises :class:`JobNotFound` (unknown job, or ``owner`` given and not the job's),
        :class:`InvalidEventId` (malformed id or one not in the log) and
        :class:`TooManyListeners`, on the first iteration.
        """

    @abc.abstractmethod
    async def status(self, job_id: str, *, owner: str | None = None) -> JobInfo | None:
        """The job's info and text so far; ``None`` if unknown (or not ``owner``'s)."""

    @abc.abstractmethod
    async def list_active(self, owner: str) -> list[JobInfo]:
        """The running jobs of one user, oldest first (``text`` left empty).

        With a recorder set (:meth:`set_recorder`), a job that ended stays listed, with its
        final status, until its recorder has run: a reader that lists the running answers,
        then reads what was recorded, finds each answer in one or the other, never in
        neither."""

    @abc.abstractmethod
    async def abort(self, job_id: str, *, owner: str | None = None, wait: float = 3.0) -> bool:
        """Abort a running job from any instance.

        Returns ``True`` when the job's owning instance stopped it and its ``aborted`` final
        event is stored (within ``wait`` seconds), ``False`` when it had already finished or
        no acknowledgement came in time. Raises :class:`JobNotFound` for an unknown job.
        """

    @abc.abstractmethod
    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - public API
        """Stop taking jobs; hand the running ones over or let them finish within
        ``timeout`` seconds (what is left then ends with ``error``)."""

    # --- shared machinery ---------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed or self._draining:
            raise ManagerClosed("the stream manager is closed or draining")

    def _check_create(self, owner: object, meta: object, job_id: object) -> str:
        """Validate the arguments of :meth:`create`; the job id to use (new when ``None``)."""
        self._check_open()
        check_owner(owner)
        if meta is not None and not isinstance(meta, dict):
            raise InvalidEvent("meta must be a JSON object (dict)")
        return check_job_id(job_id) if job_id is not None else uuid.uuid4().hex

    def set_recorder(self, fn: Recorder | None) -> None:
        """Register what to do with a finished answer: ``fn(producer)`` runs on the one
        instance whose producer's final event was stored (under its epoch, on Redis), so
        what it records is exactly what every subscriber received. Until it has run, the
        ended job is still listed by :meth:`list_active`."""
        self._recorder = fn

    async def _record(self, producer: Producer) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        try:
            await recorder(producer)
        except Exception:
            log.exception("recording the end of job %s failed", producer.job_id)

    @abc.abstractmethod
    def _schedule_flush(self) -> None:
        """Make sure the dirty producers are written within the coalescing window."""

    @abc.abstractmethod
    async def _relieve(self) -> None:
        """Called by a producer with many buffered chunks: write them out now."""

    @abc.abstractmethod
    async def store_end(self, producer: Producer) -> None:
        """Write ``producer``'s final event (it has numbered it) and wait until it is
        stored (called by :meth:`Producer.complete` and :meth:`Producer.fail`)."""

    def local_jobs(self) -> list[Producer]:
        """The producers of this instance's running jobs."""
        return list(self._producers.values())

    def producer(self, job_id: str) -> Producer | None:
        """This instance's producer of ``job_id``, if it produces it."""
        return self._producers.get(job_id)

    async def _cancel_runs(self) -> None:
        await asyncio.gather(*(stop_task(task) for task in list(self._runs)))
