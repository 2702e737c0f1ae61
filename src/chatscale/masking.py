"""The one place that hides credentials in text chatscale prints or logs.

Every output path goes through here: configuration errors and ``chatscale config`` (via
:func:`mask_uri`), the command's error lines and every log record of a server process (via
:func:`mask_text` and :func:`install_log_masking`).

The rule errs on the side of hiding: in a URL, everything between ``//`` and the *last*
``@`` of the entry is user information, so a password containing ``/``, ``@``, ``?`` or
``#`` (unescaped, which is invalid) is still hidden whole. The user name before the first
``:`` is kept because it helps to diagnose; a user information without ``:`` may be a lone
password and is hidden whole.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SPACE = re.compile(r"(\s+)")
_install_lock = threading.Lock()
_installed = False


def _mask_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}" if colon else MASK


def _mask_entry(entry: str) -> str:
    # ``entry`` is what follows ``scheme://`` up to the next URL (or the end of the word).
    at = entry.rfind("@")
    if at < 0:
        return entry
    return f"{_mask_userinfo(entry[:at])}@{entry[at + 1 :]}"


def _mask_word(word: str, schemeless: bool) -> str:
    starts = [m for m in _SCHEME.finditer(word)]
    if not starts:
        if schemeless and "@" in word:
            # A value without a scheme (a mistake) can still be user:password@host.
            return f"{MASK}@{word[word.rfind('@') + 1 :]}"
        return word
    out = [word[: starts[0].start()]]
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(word)
        out.append(match.group(0))
        out.append(_mask_entry(word[match.end() : end]))
    return "".join(out)


def _mask(text: str, schemeless: bool) -> str:
    if "@" not in text:
        return text
    return "".join(
        part if part.isspace() else _mask_word(part, schemeless) for part in _SPACE.split(text)
    )


def mask_text(text: str) -> str:
    """``text`` with the user information of every ``scheme://`` URL in it masked."""
    return _mask(text, schemeless=False)


def mask_uri(value: str) -> str:
    """A setting's URI value (one URI or a comma-separated list) fit to print.

    Unlike :func:`mask_text`, a value without any scheme is taken as a URI too: whatever
    comes before its last ``@`` is hidden.
    """
    return _mask(value, schemeless=True)


def _masking_factory(base: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return record
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatters reuse ``exc_text`` when it is set: format the traceback once, masked.
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
        return record

    return factory


def install_log_masking() -> None:
    """Mask credentials in every log record this process creates, whatever its handler.

    A record factory rather than a handler filter: it also covers handlers configured later
    (uvicorn's) and the last-resort handler. Idempotent.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        logging.setLogRecordFactory(_masking_factory(logging.getLogRecordFactory()))
        _installed = True
