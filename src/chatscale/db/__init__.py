"""Conversation history (and, without Redis, sessions) in a SQL database.

SQLAlchemy 2 (async) on SQLite (``aiosqlite``, the default: a file that survives restarts)
or PostgreSQL (``asyncpg``, for several instances). The schema is migrated by Alembic
(:mod:`chatscale.db.migrate`); docs/configuration.md describes ``DATABASE_URL``.
"""

from chatscale.db.url import DEFAULT_DATABASE_URL, DatabaseTarget, parse_database_url

__all__ = ["DEFAULT_DATABASE_URL", "DatabaseTarget", "parse_database_url"]
