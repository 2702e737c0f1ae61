"""Stopping background tasks that run Redis commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
