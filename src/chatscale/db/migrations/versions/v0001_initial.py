"""Conversations, their messages, and sessions.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.String(200)


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "conversations",
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("id", _ID, nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "id", name="pk_conversations"),
    )
    op.create_index(
        "ix_conversations_user_id_updated_at_id",
        "conversations",
        ["user_id", "updated_at", "id"],
    )
    op.create_table(
        "messages",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("conversation_id", _ID, nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("request_id", _ID, nullable=True),
        sa.Column("stream_id", _ID, nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["user_id", "conversation_id"],
            ["conversations.user_id", "conversations.id"],
            name="fk_messages_user_id_conversations",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "user_id",
            "conversation_id",
            "request_id",
            name="uq_messages_user_id_conversation_id_request_id",
        ),
        sa.UniqueConstraint(
            "user_id",
            "conversation_id",
            "stream_id",
            name="uq_messages_user_id_conversation_id_stream_id",
        ),
    )
    op.create_index(
        "ix_messages_user_id_conversation_id_seq",
        "messages",
        ["user_id", "conversation_id", "seq"],
    )
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String(128), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_sessions"),
    )
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])


def downgrade() -> None:
    """Drop everything (the data with it)."""
    op.drop_table("sessions")
    op.drop_table("messages")
    op.drop_table("conversations")
