"""The replies of one pub/sub connection, taken straight from its hiredis reader.

A busy subscriber process spends most of its read time per message, not per byte: redis-py's
``read_response`` goes through its connection, its parser and (under RESP3) a push handler
that formats every message for a debug log even when nothing logs it. The hub reads its own
connections, which carry nothing but replies to its subscriptions, so it parses them with
the connection's own hiredis reader (the one redis-py set up for its protocol and encoding),
and drains every reply a socket read brought before it waits again.
"""

from __future__ import annotations

from typing import Any

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.exceptions import ConnectionError as RedisConnectionError

#: What :meth:`Replies.next` returns when no whole reply is buffered.
MORE = NOT_ENOUGH_DATA
_READ_SIZE = 65536


class Replies:
    """Replies of one connected redis-py connection (the hub's only reader of it)."""

    __slots__ = ("_feed", "_stream", "next")

    def __init__(self, conn: Any) -> None:
        parser = conn._parser
        # redis-py is pinned to a release whose default parser is hiredis (a dependency).
        if not isinstance(parser, _AsyncHiredisParser) or conn._reader is None:
            raise TypeError("the pub/sub connection must be connected, with the hiredis parser")
        reader: Any = parser._reader
        self._stream = conn._reader
        self._feed = reader.feed
        #: The next buffered reply, or :data:`MORE`. A reply that is an error comes back as
        #: the exception (not raised).
        self.next: Any = reader.gets

    async def fill(self) -> None:
        """Wait for more bytes from the server (``ConnectionError`` once it closed)."""
        data = await self._stream.read(_READ_SIZE)
        if not data:
            raise RedisConnectionError("the pub/sub connection was closed")
        self._feed(data)
