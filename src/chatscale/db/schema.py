"""The tables (the Alembic migrations in ``migrations/versions`` create exactly these).

Times are seconds since the epoch as floating point numbers, as the API returns them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Named constraints, so that later migrations can address them on every dialect.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Longest user id and conversation id stored (ids are far shorter: see server/schemas.py).
ID_CHARS = 200

conversations = Table(
    "conversations",
    metadata,
    Column("user_id", String(ID_CHARS), primary_key=True),
    Column("id", String(ID_CHARS), primary_key=True),
    Column("title", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # A user's list, most recently updated first, paged by (updated_at, id).
    Index(None, "user_id", "updated_at", "id"),
)

messages = Table(
    "messages",
    metadata,
    # Order of the messages in a conversation (BIGINT on PostgreSQL; SQLite's INTEGER
    # PRIMARY KEY is its 64-bit rowid).
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("user_id", String(ID_CHARS), nullable=False),
    Column("conversation_id", String(ID_CHARS), nullable=False),
    Column("role", String(32), nullable=False),
    #: The whole message as JSON text (role, content, status, model...).
    Column("body", Text, nullable=False),
    #: The client_request_id of the POST that stored a user message (NULL otherwise).
    Column("request_id", String(ID_CHARS), nullable=True),
    #: The stream whose finished answer this is (NULL for user messages).
    Column("stream_id", String(ID_CHARS), nullable=True),
    Column("created_at", Double, nullable=False),
    ForeignKeyConstraint(
        ["user_id", "conversation_id"],
        ["conversations.user_id", "conversations.id"],
        ondelete="CASCADE",
    ),
    # The two "stored once" guarantees of chatscale.server.store (NULLs never conflict).
    UniqueConstraint("user_id", "conversation_id", "request_id"),
    UniqueConstraint("user_id", "conversation_id", "stream_id"),
    Index(None, "user_id", "conversation_id", "seq"),
)

sessions = Table(
    "sessions",
    metadata,
    #: sha256 of the session id, as the Redis store keys it.
    Column("id_hash", String(128), primary_key=True),
    Column("state", Text, nullable=False),
    Column("expires_at", Double, nullable=False),
    Index(None, "expires_at"),
)
