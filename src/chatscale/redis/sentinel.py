"""The Sentinel master, as every answering sentinel names it.

redis-py asks the sentinels one by one and connects to the first master one of them names.
Right after a failover that is not enough: the sentinels name different masters for seconds
(the new configuration spreads by gossip), and a former master that comes back takes writes
until the sentinels demote it. Connections made then land on either node, and an instance
whose connections stay with the former master writes where no other instance looks: its
heartbeat goes stale for the others (which take its jobs while it runs them) and what it
stores is lost when the former master is demoted.

So every connection of the pool below goes to the master that all answering sentinels
name, a majority of them answering; while they disagree, no connection is made (the command
fails with a connection error, which callers retry), and a connection found pointing at a
master the sentinels no longer name is dropped before it is used.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.sentinel import MasterNotFoundError

Address = tuple[str, int]


class SentinelsDisagree(MasterNotFoundError):
    """The sentinels do not name one master (a failover is settling), or too few answered."""


async def agreed_master(manager: Any, service: str) -> Address:
    """The master every answering sentinel of ``manager`` names for ``service``.

    A majority of the sentinels must answer, and every answer must name the same address;
    otherwise :class:`SentinelsDisagree` (a connection error: callers retry).
    """
    sentinels = manager.sentinels
    replies = await asyncio.gather(
        *(s.sentinel_get_master_addr_by_name(service) for s in sentinels),
        return_exceptions=True,
    )
    answers = [r for r in replies if isinstance(r, tuple | list) and len(r) == 2]
    named = {(r[0].decode() if isinstance(r[0], bytes) else str(r[0]), int(r[1])) for r in answers}
    if len(named) != 1 or len(answers) * 2 <= len(sentinels):
        raise SentinelsDisagree(
            f"Sentinel {service!r}: sentinels name {sorted(named) or 'no master'} "
            f"({len(answers)} of {len(sentinels)} answered); waiting until they agree"
        )
    return next(iter(named))


class AgreedSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel-managed pool whose connections all go to the agreed master
    (:func:`agreed_master`), and whose ``get_connection`` waits for a free connection."""

    async def get_master_address(self) -> Address:
        """Ask the sentinels; when the master changed, idle connections are dropped (and
        the others before their next use, see :meth:`ensure_connection`)."""
        address = await agreed_master(self.sentinel_manager, self.service_name)
        if self.master_address != address:
            self.master_address = address
            await self.disconnect(inuse_connections=False)
        return address

    def forget_master(self) -> None:
        """The sentinels no longer agree: no connection is reused before they do again."""
        self.master_address = None

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        """Drop ``connection`` first when it points elsewhere than the agreed master (it
        was in use when the master moved)."""
        if connection.is_connected and (
            self.master_address is None
            or (getattr(connection, "host", None), getattr(connection, "port", None))
            != self.master_address
        ):
            await connection.disconnect()
        await super().ensure_connection(connection)
