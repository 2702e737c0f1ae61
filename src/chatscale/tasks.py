"""Background tasks: starting them without losing them, and stopping them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any] | None, *, within: float = 3.0) -> None:
    """Cancel ``task`` until it ends.

    One cancel is not always enough: on Python 3.11, ``asyncio.timeout`` inside redis-py
    can turn an outside cancellation into a ``TimeoutError`` that the client retries, so
    the task keeps running. Cancelling again (the loops also check a stop flag) ends it.
    """
    if task is None or task.done():
        if task is not None:
            with contextlib.suppress(BaseException):
                task.result()
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
        if loop.time() > deadline:
            log.warning("background task %r did not stop", task)
            return
    with contextlib.suppress(BaseException):
        task.result()


class Background:
    """Tasks an object starts and does not await: kept referenced until they end, their
    failures logged (never "exception was never retrieved"), and waited for, then stopped,
    at :meth:`close`."""

    __slots__ = ("_tasks", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in a task of this set."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: %s", self._what, task.exception())

    async def close(self, grace: float = 0.0) -> None:
        """Let the tasks finish for up to ``grace`` seconds, then stop the rest."""
        if self._tasks and grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            await stop_task(task)
