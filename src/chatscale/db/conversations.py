"""Conversations in a SQL database: :class:`SqlConversationStore`.

The guarantees of :class:`chatscale.server.store.ConversationStore` rest on unique
constraints, not on reading first: a user message is inserted with
``ON CONFLICT DO NOTHING`` against ``(user, conversation, request_id)`` and an answer against
``(user, conversation, stream_id)``, so two instances (or two tasks) storing the same one at
the same moment store it once, and the loser learns it from the empty ``RETURNING``. An
answer dropped by a regeneration keeps its row, with the role :data:`DROPPED` (never read
back), so its stream id stays taken.
Conversations are kept until deleted (CONVERSATION_RETENTION applies to memory and Redis).
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Insert, and_, delete, func, literal, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatscale.db.engine import write_transaction
from chatscale.db.schema import conversations, messages
from chatscale.paging import MAX_PAGE, Page, page_of_rows, parse_cursor

Message = dict[str, Any]

#: The role of an answer dropped by a regeneration: its row stays (the unique stream id keeps
#: a late store of it out; its ``request_id`` is the regeneration's, which drops one answer).
DROPPED = "dropped"


def _storable(title: str) -> str:
    # PostgreSQL's text cannot hold NUL (messages are JSON, where it is escaped; a title is
    # stored as is).
    return title.replace("\x00", "\ufffd")


class SqlConversationStore:
    """Conversations, their messages and their guarantees in one SQL database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    def _insert_ignoring_duplicates(self, table: Any, values: dict[str, Any]) -> Insert:
        # No conflict target: any unique constraint makes the row a duplicate.
        statement: Insert = self._insert(table).values(**values).on_conflict_do_nothing()
        return statement

    async def add_user_message(
        self,
        user: str,
        conversation_id: str,
        message: Message,
        *,
        title: str,
        request_id: str | None = None,
    ) -> bool:
        """Append the user's message once per ``request_id`` (one transaction)."""
        for attempt in range(2):
            now = time.time()
            try:
                async with write_transaction(self._engine) as conn:
                    await conn.execute(
                        self._insert_ignoring_duplicates(
                            conversations,
                            {
                                "user_id": user,
                                "id": conversation_id,
                                "title": _storable(title),
                                "created_at": now,
                                "updated_at": now,
                            },
                        )
                    )
                    return await self._append(
                        conn, user, conversation_id, message, now, request_id, None
                    )
            except IntegrityError:
                # The conversation was deleted between the two inserts (foreign key): the
                # message starts it again, as it would have a moment later.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def store_answer(
        self, user: str, conversation_id: str, stream_id: str, message: Message
    ) -> bool:
        """Append a finished answer once per ``stream_id``; False when it was there already
        or the conversation is gone."""
        now = time.time()
        try:
            async with write_transaction(self._engine) as conn:
                return await self._append(
                    conn, user, conversation_id, message, now, None, stream_id, must_exist=True
                )
        except IntegrityError:
            # The conversation was deleted while the answer was inserted (foreign key).
            return False

    async def drop_last_answer(self, user: str, conversation_id: str, *, request_id: str) -> bool:
        """Drop the last message if it is an answer, once per ``request_id`` (one statement
        in one transaction; writing from its start, see :meth:`_append`)."""
        mine = and_(messages.c.user_id == user, messages.c.conversation_id == conversation_id)
        last = select(func.max(messages.c.seq)).where(mine, messages.c.role != DROPPED)
        done = select(messages.c.seq).where(mine, messages.c.request_id == request_id)
        now = time.time()
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                update(messages)
                .where(
                    mine,
                    messages.c.seq == last.scalar_subquery(),
                    messages.c.role == "assistant",
                    ~done.exists(),
                )
                .values(role=DROPPED, request_id=request_id)
            )
            if not result.rowcount:
                return False
            await conn.execute(
                update(conversations).where(_one(user, conversation_id)).values(updated_at=now)
            )
        return True

    async def _append(
        self,
        conn: AsyncConnection,
        user: str,
        conversation_id: str,
        message: Message,
        now: float,
        request_id: str | None,
        stream_id: str | None,
        *,
        must_exist: bool = False,
    ) -> bool:
        values = {
            "user_id": user,
            "conversation_id": conversation_id,
            "role": str(message.get("role", "")),
            "body": json.dumps(message, ensure_ascii=False, separators=(",", ":")),
            "request_id": request_id,
            "stream_id": stream_id,
            "created_at": now,
        }
        if must_exist:
            # One statement (INSERT ... SELECT ... WHERE EXISTS): the transaction writes from
            # its start, so SQLite never has to turn a reader into a writer (which fails at
            # once, without waiting, when another process wrote meanwhile).
            row = select(*(literal(v, messages.c[k].type).label(k) for k, v in values.items()))
            row = row.where(select(conversations.c.id).where(_one(user, conversation_id)).exists())
            # The dialect's insert (postgresql/sqlite) has on_conflict_do_nothing.
            statement: Any = self._insert(messages).from_select(list(values), row)
            statement = statement.on_conflict_do_nothing()
        else:
            statement = self._insert_ignoring_duplicates(messages, values)
        inserted = (await conn.execute(statement.returning(messages.c.seq))).first()
        if inserted is None:
            return False
        await conn.execute(
            update(conversations).where(_one(user, conversation_id)).values(updated_at=now)
        )
        return True

    async def list(self, user: str) -> list[dict[str, Any]]:
        """The user's conversations, most recently updated first (at most MAX_PAGE)."""
        return (await self.page(user, limit=MAX_PAGE)).conversations

    async def page(self, user: str, *, limit: int, before: str | None = None) -> Page:
        """Up to ``limit`` conversations after the cursor ``before`` (from a previous page).

        Keyset paging on the (user, updated_at, id) index: a page costs the same however far
        down the list it is. Raises ValueError for a cursor this store did not make.
        """
        query = select(
            conversations.c.id,
            conversations.c.title,
            conversations.c.created_at,
            conversations.c.updated_at,
        ).where(conversations.c.user_id == user)
        if before is not None:
            updated_at, conversation_id = parse_cursor(before)
            # A row-value comparison: both SQLite and PostgreSQL turn it into one range of
            # the (user_id, updated_at, id) index.
            query = query.where(
                tuple_(conversations.c.updated_at, conversations.c.id)
                < tuple_(literal(updated_at), literal(conversation_id))
            )
        query = query.order_by(conversations.c.updated_at.desc(), conversations.c.id.desc()).limit(
            limit + 1
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return page_of_rows((_summary(row) for row in rows), limit)

    async def count(self, user: str) -> int:
        """How many conversations the user has."""
        async with self._engine.connect() as conn:
            total = await conn.scalar(
                select(func.count())
                .select_from(conversations)
                .where(conversations.c.user_id == user)
            )
        return int(total or 0)

    async def get(self, user: str, conversation_id: str) -> dict[str, Any] | None:
        """One conversation with its messages in the order they were stored.

        One statement (an outer join), so the summary and the messages come from one
        snapshot: two reads could see an answer without the update of ``updated_at`` that
        came with it.
        """
        query = (
            select(
                conversations.c.id,
                conversations.c.title,
                conversations.c.created_at,
                conversations.c.updated_at,
                messages.c.body,
            )
            .select_from(
                conversations.outerjoin(
                    messages,
                    and_(
                        messages.c.user_id == conversations.c.user_id,
                        messages.c.conversation_id == conversations.c.id,
                        messages.c.role != DROPPED,
                    ),
                )
            )
            .where(_one(user, conversation_id))
            .order_by(messages.c.seq)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            return None
        bodies = [row.body for row in rows if row.body is not None]
        return {**_summary(rows[0]), "messages": [json.loads(body) for body in bodies]}

    async def rename(self, user: str, conversation_id: str, title: str) -> bool:
        """Give the conversation a new title; False when it does not exist."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                update(conversations)
                .where(_one(user, conversation_id))
                .values(title=_storable(title))
            )
        return bool(result.rowcount)

    async def delete(self, user: str, conversation_id: str) -> bool:
        """Delete the conversation and its messages; False when it does not exist."""
        async with write_transaction(self._engine) as conn:
            # Messages first: does not depend on the database enforcing ON DELETE CASCADE.
            await conn.execute(
                delete(messages).where(
                    messages.c.user_id == user, messages.c.conversation_id == conversation_id
                )
            )
            result = await conn.execute(delete(conversations).where(_one(user, conversation_id)))
        return bool(result.rowcount)


def _one(user: str, conversation_id: str) -> Any:
    return and_(conversations.c.user_id == user, conversations.c.id == conversation_id)


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "title": row.title,
        "created_at": float(row.created_at),
        "updated_at": float(row.updated_at),
    }
