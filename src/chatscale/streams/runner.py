"""Wiring a provider's stream to a producer: cancel it on abort, end the job either way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from chatscale.errors import UserFacingError
from chatscale.streams.model import JobInfo, JobStatus

if TYPE_CHECKING:
    from chatscale.streams.producer import Producer

log = logging.getLogger(__name__)
#: What an end user reads when a generation fails with an error not written for them.
GENERIC_FAILURE = "the answer failed; the server log has the details"


class ProducerStep(Protocol):
    """One step of a generation (:class:`chatscale.llm.base.Chunk` is one)."""

    @property
    def text(self) -> str: ...

    @property
    def event(self) -> str | None: ...

    @property
    def data(self) -> Mapping[str, Any]: ...

    @property
    def finish_reason(self) -> str | None: ...


#: Given a job (``text`` = text so far), produce the rest of its answer.
Continuation = Callable[[JobInfo], AsyncIterator["ProducerStep | str"]]


async def _pump(producer: Producer, steps: AsyncIterator[ProducerStep | str]) -> None:
    finish = "stop"
    async for step in steps:
        if producer.closed:
            return
        if isinstance(step, str):
            await producer.delta(step)
            continue
        if step.text:
            await producer.delta(step.text)
        if step.event:
            await producer.event(step.event, dict(step.data))
        if step.finish_reason:
            finish = step.finish_reason
    await producer.complete(finish)


async def run(producer: Producer, steps: AsyncIterator[ProducerStep | str]) -> JobStatus:
    """Feed ``steps`` into ``producer`` until they end, fail, or the job is aborted.

    On abort (from any instance) the steps are cancelled, which closes the provider call;
    the manager has already stored the ``aborted`` final event. A failing step iterator ends
    the job with an ``error`` event: the message of a :class:`UserFacingError`, otherwise a
    generic one (the exception is logged).
    """
    pump = asyncio.ensure_future(_pump(producer, steps))
    stop = asyncio.ensure_future(producer.aborted.wait())
    try:
        await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        pump.cancel()
        stop.cancel()
        with contextlib.suppress(BaseException):
            await pump
        raise
    finally:
        stop.cancel()
    if not pump.done():
        pump.cancel()
    try:
        await pump
    except asyncio.CancelledError:
        pass
    except UserFacingError as exc:
        log.warning("generation of job %s failed: %s", producer.job_id, exc)
        await producer.fail(str(exc) or GENERIC_FAILURE)
    except Exception as exc:
        log.warning("generation of job %s failed", producer.job_id, exc_info=exc)
        await producer.fail(GENERIC_FAILURE)
    finally:
        aclose: Callable[[], Any] | None = getattr(steps, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return producer.status
