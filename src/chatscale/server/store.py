"""Conversations of each user, in process memory or on Redis, kept CONVERSATION_RETENTION.

On Redis every key of one user shares a Cluster hash tag, so the few multi-key writes run as
one transaction or script. A finished answer is stored once per stream id, whoever stores
it (after a takeover the new producer does, and a retry cannot add it twice). A user message
sent with a ``client_request_id`` is stored once per id in its conversation, so a retried
``POST /api/chat`` whose first attempt failed after storing it does not add it again.
Regenerating drops the last answer once per request, and the dropped answer's stream id stays
taken: a late or repeated store of that answer does not bring it back.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from chatscale.redis.connection import RedisConnection

if TYPE_CHECKING:
    from chatscale.db.database import Database

Message = dict[str, Any]

#: Longest title derived from the first message.
TITLE_CHARS = 80

# A deleted conversation keeps a tombstone, the field ``!deleted`` of its ``answers`` hash
# (stream ids and ``req:`` fields never start with ``!``), for CONVERSATION_RETENTION: an
# answer still running when its conversation was deleted must not bring it back when it
# ends. A new message in the conversation (another tab still showing it) starts it again.
_ADD_USER = """
if ARGV[6] ~= '' and redis.call('HSETNX', KEYS[3], 'req:' .. ARGV[6], '1') == 0 then
  return 0
end
redis.call('HDEL', KEYS[3], '!deleted')
redis.call('HSETNX', KEYS[1], 'title', ARGV[1])
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[2])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[5])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""
_STORE_ANSWER = """
if redis.call('HEXISTS', KEYS[3], '!deleted') == 1 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[3], ARGV[1], '1') == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""
# Regenerating: drop the last message when it is an answer, once per request (the field
# ``regen:<key>`` of the ``answers`` hash), so a write repeated after a failover drops one.
# The answer's stream id stays in ``answers``: that answer is never stored again.
_DROP_ANSWER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[3], 'regen:' .. ARGV[1]) == 1 then return 0 end
local last = redis.call('LINDEX', KEYS[2], -1)
if not last then return 0 end
local ok, message = pcall(cjson.decode, last)
if not ok or type(message) ~= 'table' or message['role'] ~= 'assistant' then return 0 end
redis.call('RPOP', KEYS[2])
redis.call('HSET', KEYS[3], 'regen:' .. ARGV[1], '1')
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[4])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 1
"""
_RENAME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[1])
return 1
"""
_DELETE = """
local found = redis.call('EXISTS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[3], '!deleted', '1')
redis.call('EXPIRE', KEYS[3], ARGV[2])
return found
"""


#: The ``client_request_id`` of the ``POST /api/chat`` being served, for
#: :meth:`ConversationStore.add_user_message` callers that do not pass ``request_id``
#: themselves (the route sets it around :meth:`ChatService.start`).
def title_of(message: str) -> str:
    """A conversation's title: the start of its first message on one line."""
    line = " ".join(message.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class ConversationStore(Protocol):
    """Where conversations live."""

    async def add_user_message(
        self,
        user: str,
        conversation_id: str,
        message: Message,
        *,
        title: str,
        request_id: str | None = None,
    ) -> bool:
        """Append the user's message (creating the conversation with ``title``).

        With a ``request_id`` the message is stored once per id and conversation; False
        when it was already there (a retried request).
        """
        ...

    async def store_answer(
        self, user: str, conversation_id: str, stream_id: str, message: Message
    ) -> bool:
        """Append a finished answer once per ``stream_id``; False when it was already there."""
        ...

    async def drop_last_answer(self, user: str, conversation_id: str, *, request_id: str) -> bool:
        """Remove the conversation's last message if it is an answer (regenerating it), once
        per ``request_id``: True when one was dropped; False when the last message is not an
        answer, the conversation does not exist, or this request dropped one already. The
        dropped answer's stream id stays taken (:meth:`store_answer` refuses it)."""
        ...

    async def list(self, user: str) -> list[dict[str, Any]]:
        """The user's conversations, most recently updated first (no messages)."""
        ...

    async def get(self, user: str, conversation_id: str) -> dict[str, Any] | None:
        """One conversation with its messages, or None."""
        ...

    async def rename(self, user: str, conversation_id: str, title: str) -> bool:
        """Set the conversation's title (its place in the list does not change); False
        when there is no such conversation."""
        ...

    async def delete(self, user: str, conversation_id: str) -> bool:
        """Delete the conversation and its messages; False when there is no such
        conversation. An answer still running in it is not stored when it ends."""
        ...


@dataclass
class _Conversation:
    id: str
    title: str
    created_at: float
    updated_at: float
    expires: float
    messages: list[Message] = field(default_factory=list)
    answers: set[str] = field(default_factory=set)
    requests: set[str] = field(default_factory=set)
    regenerations: set[str] = field(default_factory=set)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class MemoryConversationStore:
    """Conversations in this process (lost on restart): the embedded default."""

    def __init__(self, retention_s: float, max_per_user: int = 1_000) -> None:
        self.retention_s = retention_s
        self.max_per_user = max_per_user
        self._users: dict[str, OrderedDict[str, _Conversation]] = {}

    def _live(self, user: str) -> OrderedDict[str, _Conversation]:
        now = time.time()
        conversations = self._users.setdefault(user, OrderedDict())
        for key in [k for k, c in conversations.items() if c.expires <= now]:
            del conversations[key]
        return conversations

    def _touch(self, user: str, conversation: _Conversation) -> None:
        now = time.time()
        conversation.updated_at = now
        conversation.expires = now + self.retention_s
        conversations = self._users[user]
        conversations.move_to_end(conversation.id)
        while len(conversations) > self.max_per_user:
            conversations.popitem(last=False)

    async def add_user_message(
        self,
        user: str,
        conversation_id: str,
        message: Message,
        *,
        title: str,
        request_id: str | None = None,
    ) -> bool:
        """Append the user's message, once per ``request_id`` (see the protocol)."""
        conversations = self._live(user)
        conversation = conversations.get(conversation_id)
        if conversation is None:
            now = time.time()
            conversation = _Conversation(conversation_id, title, now, now, now)
            conversations[conversation_id] = conversation
        elif request_id is not None and request_id in conversation.requests:
            return False
        if request_id is not None:
            conversation.requests.add(request_id)
        conversation.messages.append(message)
        self._touch(user, conversation)
        return True

    async def store_answer(
        self, user: str, conversation_id: str, stream_id: str, message: Message
    ) -> bool:
        """Append a finished answer once per ``stream_id``."""
        conversation = self._live(user).get(conversation_id)
        if conversation is None or stream_id in conversation.answers:
            return False
        conversation.answers.add(stream_id)
        conversation.messages.append(message)
        self._touch(user, conversation)
        return True

    async def drop_last_answer(self, user: str, conversation_id: str, *, request_id: str) -> bool:
        """Drop the last message if it is an answer, once per ``request_id``."""
        conversation = self._live(user).get(conversation_id)
        if conversation is None or request_id in conversation.regenerations:
            return False
        if not conversation.messages or conversation.messages[-1].get("role") != "assistant":
            return False
        # Its stream id stays in ``answers``: a late store of it is refused.
        conversation.messages.pop()
        conversation.regenerations.add(request_id)
        self._touch(user, conversation)
        return True

    async def list(self, user: str) -> list[dict[str, Any]]:
        """The user's conversations, most recently updated first."""
        return [c.summary() for c in reversed(self._live(user).values())]

    async def get(self, user: str, conversation_id: str) -> dict[str, Any] | None:
        """One conversation with its messages."""
        conversation = self._live(user).get(conversation_id)
        if conversation is None:
            return None
        return {**conversation.summary(), "messages": [dict(m) for m in conversation.messages]}

    async def rename(self, user: str, conversation_id: str, title: str) -> bool:
        """Set the title."""
        conversation = self._live(user).get(conversation_id)
        if conversation is None:
            return False
        conversation.title = title
        return True

    async def delete(self, user: str, conversation_id: str) -> bool:
        """Delete the conversation (answers ending later find it gone and are dropped)."""
        return self._live(user).pop(conversation_id, None) is not None


class RedisConversationStore:
    """Conversations on Redis: a meta HASH, a message LIST and an index ZSET per user."""

    def __init__(self, connection: RedisConnection, retention_s: int) -> None:
        self._client = connection.client
        self._keys = connection.keys
        self._connection = connection
        self.retention_s = retention_s
        self._add_user = self._client.register_script(_ADD_USER)
        self._store_answer = self._client.register_script(_STORE_ANSWER)
        self._drop_answer = self._client.register_script(_DROP_ANSWER)
        self._rename = self._client.register_script(_RENAME)
        self._delete = self._client.register_script(_DELETE)

    def _parts(self, user: str, conversation_id: str) -> tuple[str, str, str, str]:
        keys = self._keys
        return (
            keys.conversation(user, conversation_id, "meta"),
            keys.conversation(user, conversation_id, "msgs"),
            keys.conversation(user, conversation_id, "answers"),
            keys.conversation_index(user),
        )

    async def add_user_message(
        self,
        user: str,
        conversation_id: str,
        message: Message,
        *,
        title: str,
        request_id: str | None = None,
    ) -> bool:
        """Append the user's message, once per ``request_id`` (one atomic script)."""
        return await self._durable(
            self._add_user,
            list(self._parts(user, conversation_id)),
            [
                title,
                repr(time.time()),
                _dump(message),
                self.retention_s,
                conversation_id,
                request_id or "",
            ],
        )

    async def store_answer(
        self, user: str, conversation_id: str, stream_id: str, message: Message
    ) -> bool:
        """Append a finished answer once per ``stream_id`` (one atomic script)."""
        now = time.time()
        return await self._durable(
            self._store_answer,
            list(self._parts(user, conversation_id)),
            [stream_id, _dump(message), repr(now), self.retention_s, conversation_id],
        )

    async def drop_last_answer(self, user: str, conversation_id: str, *, request_id: str) -> bool:
        """Drop the last message if it is an answer, once per ``request_id`` (one atomic
        script; a repeat after a failover drops nothing more)."""
        return await self._durable(
            self._drop_answer,
            list(self._parts(user, conversation_id)),
            [request_id, repr(time.time()), self.retention_s, conversation_id],
        )

    async def _durable(self, script: Any, keys: list[str], args: list[Any]) -> bool:
        """Run an idempotent write ``script`` so that it survives a failover (see
        :meth:`RedisConnection.write_durably`): a message or an answer acknowledged by a
        master that then lost its role would be gone. Whether any attempt stored it."""

        async def write(target: Any) -> Any:
            return await script(keys=keys, args=args, client=target)

        what = f"a conversation write to {keys[0]}"
        return any(bool(r) for r in await self._connection.write_durably(write, what))

    async def list(self, user: str) -> list[dict[str, Any]]:
        """The user's conversations, most recently updated first."""
        index = self._keys.conversation_index(user)
        await self._client.zremrangebyscore(index, "-inf", time.time() - self.retention_s)
        raw: list[Any] = await self._client.zrevrange(index, 0, 999)
        ids = [bytes(i).decode() for i in raw]
        if not ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for conversation_id in ids:
                pipe.hgetall(self._keys.conversation(user, conversation_id, "meta"))
            metas = await pipe.execute()
        return [_summary(i, m) for i, m in zip(ids, metas, strict=True) if m]

    async def get(self, user: str, conversation_id: str) -> dict[str, Any] | None:
        """One conversation with its messages."""
        meta, msgs, _, _ = self._parts(user, conversation_id)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(meta)
            pipe.lrange(msgs, 0, -1)
            found, raw = await pipe.execute()
        if not found:
            return None
        return {**_summary(conversation_id, found), "messages": [json.loads(m) for m in raw]}

    async def rename(self, user: str, conversation_id: str, title: str) -> bool:
        """Set the title (one script: a conversation that expired is not recreated)."""
        meta, *_ = self._parts(user, conversation_id)
        return await self._durable(self._rename, [meta], [title])

    async def delete(self, user: str, conversation_id: str) -> bool:
        """Delete meta, messages and index entry, leaving the tombstone (one script)."""
        return await self._durable(
            self._delete,
            list(self._parts(user, conversation_id)),
            [conversation_id, self.retention_s],
        )


def _dump(message: Message) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _summary(conversation_id: str, meta: dict[bytes, bytes]) -> dict[str, Any]:
    return {
        "id": conversation_id,
        "title": meta.get(b"title", b"").decode(),
        "created_at": float(meta.get(b"created_at", b"0")),
        "updated_at": float(meta.get(b"updated_at", b"0")),
    }


def create_conversation_store(
    connection: RedisConnection | None, retention_s: int, database: Database | None = None
) -> ConversationStore:
    """The database's store when there is one (a :class:`chatscale.db.database.Database`),
    else Redis when connected, else memory."""
    if database is not None:
        from chatscale.db.conversations import SqlConversationStore

        return SqlConversationStore(database.engine)
    if connection is None:
        return MemoryConversationStore(retention_s)
    return RedisConversationStore(connection, retention_s)
