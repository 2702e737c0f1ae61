"""Logging of ``chatscale serve`` and of its ``--workers`` children (LOG_LEVEL, LOG_FORMAT,
ACCESS_LOG).

One handler on the root logger writes to stderr, as text with timestamps or as one JSON
object per line; every record is masked (:func:`chatscale.masking.install_log_masking`)
and carries the request id and stream id of its context (:mod:`chatscale.logcontext`).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from chatscale import logcontext
from chatscale.masking import install_log_masking

LogFormat = Literal["text", "json"]
#: Chatty libraries kept at WARNING unless LOG_LEVEL=DEBUG: the openai SDK and httpx log
#: every request at INFO, uvicorn.error its routine start-up and shutdown lines.
THIRD_PARTY = ("openai", "httpx", "httpcore", "uvicorn.error", "asyncio")
#: uvicorn's access log's arguments, in order (``'%s - "%s %s HTTP/%s" %d'``).
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request_id=... stream_id=...]``."""

    def format(self, record: logging.LogRecord) -> str:
        """One record as text; the traceback, if any, on the following lines."""
        ids = _ids(record)
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if ids:
            line += " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]"
        trace = self._trace(record)
        return f"{line}\n{trace}" if trace else line

    def _trace(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return record.exc_text or ""


class JsonFormatter(TextFormatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, and where
    there is one ``request_id``, ``stream_id``, ``exception``; access lines also get
    ``client``, ``method``, ``path``, ``status``."""

    def format(self, record: logging.LogRecord) -> str:
        """One record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_ids(record))
        access = record.args if record.name == "uvicorn.access" else None
        if isinstance(access, tuple) and len(access) == len(_ACCESS_FIELDS):
            entry.update(zip(_ACCESS_FIELDS, access, strict=True))
        trace = self._trace(record)
        if trace:
            entry["exception"] = trace
        return json.dumps(entry, ensure_ascii=False, default=str)


def _ids(record: logging.LogRecord) -> dict[str, str]:
    ids = logcontext.current()
    # ``extra={"stream_id": ...}`` on a log call names the stream where no context does.
    for name in ("request_id", "stream_id"):
        value = record.__dict__.get(name)
        if isinstance(value, str):
            ids[name] = value
    return ids


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """chatscale's handler, recognised when logging is configured again."""


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "text", access_log: bool = False
) -> None:
    """Send every log record to stderr at ``level`` in ``fmt``; idempotent.

    Replaces the handlers of the root logger (a second call, e.g. in a worker, changes
    nothing but the settings). ``access_log`` turns uvicorn's access lines on, at INFO
    whatever ``level`` is.
    """
    install_log_masking()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    quiet = max(numeric, logging.WARNING) if numeric > logging.DEBUG else numeric
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(quiet)
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = access_log
    access.setLevel(logging.INFO if access_log else logging.CRITICAL + 1)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
        # uvicorn's own handlers (if its default config ran) would print every line twice.
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
