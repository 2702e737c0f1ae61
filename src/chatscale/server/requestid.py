"""``X-Request-ID``: every request gets an id, echoed in its answer and in its log lines
(:class:`chatscale.server.head.ResponseHeadMiddleware` sets it)."""

from __future__ import annotations

import random
import re

from starlette.types import Scope

HEADER = b"x-request-id"
# A proxy's id is kept when it is short and plain; anything else could forge log lines. Every
# id is thus made of bytes a response header may carry (answers written whole rely on it).
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id(scope: Scope) -> str:
    """The ``X-Request-ID`` a proxy sent when it is acceptable, else a new one."""
    value: bytes
    for name, value in scope["headers"]:
        if name == HEADER:
            if _ACCEPTED.fullmatch(value):
                return value.decode()
            break
    # An id for the logs, not a secret: the module's generator (reseeded in a forked child)
    # costs no system call, unlike uuid4's os.urandom.
    return random.getrandbits(128).to_bytes(16, "big").hex()
