"""The replies of one connection, taken straight from its hiredis reader.

A busy process spends most of its read time per reply, not per byte: redis-py's
``read_response`` goes through its connection, its parser and (under RESP3) a push handler
that formats every message for a debug log even when nothing logs it. The pub/sub hub and
the stream writer's line (:mod:`chatscale.redis.line`) each read connections of their own,
which carry nothing but their own replies, so they parse them with the connection's own
hiredis reader (the one redis-py set up for its protocol and encoding), and drain every
reply a socket read brought before they wait again.
"""

from __future__ import annotations

from typing import Any

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.exceptions import ConnectionError as RedisConnectionError

#: What :meth:`Replies.next` returns when no whole reply is buffered.
MORE = NOT_ENOUGH_DATA
_READ_SIZE = 65536


class Replies:
    """Replies of one connected redis-py connection (read by nothing else)."""

    __slots__ = ("_feed", "next", "stream")

    def __init__(self, conn: Any) -> None:
        parser = conn._parser
        # redis-py is pinned to a release whose default parser is hiredis (a dependency).
        if not isinstance(parser, _AsyncHiredisParser) or conn._reader is None:
            raise TypeError("the connection must be connected, with the hiredis parser")
        reader: Any = parser._reader
        #: The connection's stream reader these replies come from (a new one per connect).
        self.stream = conn._reader
        self._feed = reader.feed
        #: The next buffered reply, or :data:`MORE`. A reply that is an error comes back as
        #: the exception (not raised).
        self.next: Any = reader.gets

    async def fill(self) -> None:
        """Wait for more bytes from the server (``ConnectionError`` once it closed)."""
        data = await self.stream.read(_READ_SIZE)
        if not data:
            raise RedisConnectionError("Redis closed the connection")
        self._feed(data)
