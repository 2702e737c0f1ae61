"""Alembic environment: runs on the connection :mod:`chatscale.db.migrate` passes in.

chatscale runs migrations itself (``chatscale db upgrade`` or at start-up); there is no
alembic.ini: the connection comes through ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from chatscale.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: later migrations rebuild tables in batches.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
