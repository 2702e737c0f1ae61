"""``DATABASE_URL``: which database, validated once at start-up.

Only the two drivers chatscale ships are accepted: ``sqlite+aiosqlite`` and
``postgresql+asyncpg``. The plain spellings (``sqlite://``, ``postgresql://``,
``postgres://``) select those drivers, so a URL written for another tool works as is.
This module needs no database driver: ``chatscale config`` can validate without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from chatscale.errors import ConfigError

#: Where conversations live when neither DATABASE_URL nor USE_REDIS is set: a file in the
#: working directory (scripts/run runs from the repository's root; a container sets
#: DATABASE_URL to a path on a volume).
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///chatscale.db"

_ACCEPTED = (
    "sqlite+aiosqlite:///relative/file.db, sqlite+aiosqlite:////absolute/file.db or "
    "postgresql+asyncpg://user:password@host:5432/database"
)
_SCHEMES: dict[str, Literal["sqlite", "postgresql"]] = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+asyncpg": "postgresql",
}
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


@dataclass(frozen=True)
class DatabaseTarget:
    """A validated database URL (``url`` may carry a password: print :attr:`shown`)."""

    dialect: Literal["sqlite", "postgresql"]
    url: str = field(repr=False)
    #: The SQLite file (None for PostgreSQL and for SQLite in memory).
    path: Path | None = None

    @property
    def shown(self) -> str:
        """The URL fit to print (password masked)."""
        from chatscale.masking import mask_uri

        return mask_uri(self.url)


def parse_database_url(value: str, variable: str = "DATABASE_URL") -> DatabaseTarget:
    """Check ``value`` and pick the async driver; :class:`ConfigError` naming ``variable``."""
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ConfigError(variable, text, "is not a database URL", _ACCEPTED)
    dialect = _SCHEMES.get(scheme.lower())
    if dialect is None:
        raise ConfigError(variable, text, f"uses the unsupported scheme {scheme!r}", _ACCEPTED)
    url = f"{_DRIVERS[dialect]}://{rest}"
    if dialect == "sqlite":
        return _sqlite(variable, text, url, rest)
    return _postgresql(variable, text, url)


def _sqlite(variable: str, text: str, url: str, rest: str) -> DatabaseTarget:
    # sqlite:///file.db (relative), sqlite:////abs/file.db, sqlite:// or
    # sqlite:///:memory: (in memory: lost with the process, for tests).
    if not rest.startswith("/") and rest != "":
        raise ConfigError(
            variable, text, "a SQLite URL has no host (three slashes before the path)", _ACCEPTED
        )
    raw_path, _, _query = rest[1:].partition("?")
    if raw_path in ("", ":memory:"):
        return DatabaseTarget("sqlite", url, None)
    path = Path(unquote(raw_path))
    if path.exists() and path.is_dir():
        raise ConfigError(variable, text, "names a directory, not a database file", _ACCEPTED)
    return DatabaseTarget("sqlite", url, path)


def _postgresql(variable: str, text: str, url: str) -> DatabaseTarget:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(variable, text, f"is not a valid URL ({exc})", _ACCEPTED) from None
    # A host may also come as ?host=/run/postgresql (a unix socket directory).
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError(variable, text, "has no host", _ACCEPTED)
    if not parts.path.strip("/"):
        raise ConfigError(variable, text, "names no database (the path after the host)", _ACCEPTED)
    if port == 0:
        raise ConfigError(variable, text, "has port 0", _ACCEPTED)
    return DatabaseTarget("postgresql", url, None)
