"""Expected failures (Redis or the model server down) logged as one summarised line.

A background loop that fails every few seconds while Redis is down must not write a
traceback each round: :class:`FailureLog` writes the first failure as one line, then at most
one line per window with how many failures it saw, and one line when it works again. The
traceback of each failure is still logged at DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

_DETAIL_CHARS = 200


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line, shortened."""
    text = " ".join(str(exc).split())
    if len(text) > _DETAIL_CHARS:
        text = text[: _DETAIL_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FailureLog:
    """Summarises the repeated failures of one activity (``what``) on ``logger``.

    Call :meth:`failed` on each failure and :meth:`succeeded` on each success. Shared by
    every task doing the same activity, so many leases or connections failing at once still
    give one line per ``window_s``.
    """

    def __init__(self, logger: logging.Logger, what: str, window_s: float = 10.0) -> None:
        self.logger = logger
        self.what = what
        self.window_s = window_s
        self._kinds: Counter[str] = Counter()
        self._first: float | None = None  # when the failures began, None when healthy
        self._window = 0.0  # when the current summary window began
        self._total = 0
        self._last = ""

    def failed(self, exc: BaseException) -> None:
        """Record one failure; log a line if it is the first or a window has passed."""
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s failed", self.what, exc_info=exc)
        now = time.monotonic()
        self._last = describe(exc)
        if self._first is None:
            self._first = self._window = now
            self._total = 1
            self.logger.warning("%s failed (%s); retrying", self.what, self._last)
            return
        self._total += 1
        self._kinds[type(exc).__name__] += 1
        if now - self._window >= self.window_s:
            self._flush(now)

    def succeeded(self) -> None:
        """Record a success: after failures, log that the activity works again."""
        if self._first is None:
            return
        now = time.monotonic()
        # At WARNING like the failures: whoever saw them must also see that they ended.
        self.logger.warning(
            "%s works again after %d failures in %.0f s", self.what, self._total, now - self._first
        )
        self._first, self._total = None, 0
        self._kinds.clear()

    def _flush(self, now: float) -> None:
        kinds = ", ".join(f"{name} x{count}" for name, count in self._kinds.most_common())
        count = sum(self._kinds.values())
        self.logger.warning(
            "%s still failing: %d failures in the last %.0f s (%s); last: %s",
            self.what,
            count,
            now - self._window,
            kinds,
            self._last,
        )
        self._kinds.clear()
        self._window = now
