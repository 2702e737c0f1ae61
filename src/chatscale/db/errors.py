"""Which database errors are worth a retry (the API answers them 503 with Retry-After)."""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

#: The database is unreachable, restarting, or its pool is exhausted: not the request's
#: fault, and gone after a moment (a constraint violation or a bug is not among them).
TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
)
