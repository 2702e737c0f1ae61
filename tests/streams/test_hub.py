"""The pub/sub hub's liveness: its reads carry no timeout each, so a silent connection must
still be probed, kept while it answers, and given up (and replaced) when it does not."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatscale.redis.client import create_client
from chatscale.streams import codec
from chatscale.streams.redis_hub import Hub, Listener
from tests.conftest import redis_config, unique_prefix

PROBE_S = 0.4


class FreezableProxy:
    """Forwards a loopback port to Redis; :meth:`freeze` stops forwarding on the open
    connections (in both directions) while they stay open: a black hole. It counts the
    ``PING`` commands clients sent."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.pings = 0
        self._frozen: set[asyncio.Event] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        for flowing in self._frozen:
            flowing.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        flowing = asyncio.Event()
        flowing.set()
        self._frozen.add(flowing)
        pumps = [
            asyncio.create_task(self._pipe(reader, up_writer, flowing, count=True)),
            asyncio.create_task(self._pipe(up_reader, writer, flowing, count=False)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.transport.abort()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        flowing: asyncio.Event,
        *,
        count: bool,
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if count:
                    self.pings += data.upper().count(b"PING")
                await flowing.wait()
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxied(redis_standalone: Any) -> AsyncIterator[tuple[FreezableProxy, Any, Hub]]:
    """A hub whose connections go through a freezable proxy, and a direct client."""
    proxy = FreezableProxy(redis_standalone.port)
    await proxy.start()
    config = redis_config(redis_standalone.url(), prefix=unique_prefix())
    hub_client = create_client(redis_config(f"redis://127.0.0.1:{proxy.port}"))
    direct = create_client(config)
    hub = Hub(hub_client, probe_s=PROBE_S, idle_s=60.0)
    try:
        yield proxy, direct, hub
    finally:
        await hub.close()
        await proxy.close()
        await hub_client.aclose()
        await direct.aclose()


async def _joined(hub: Hub, channel: str, listener: Listener) -> None:
    """Join ``channel`` and wait until Redis confirmed it (the first join of a hub does not
    wait for its connection: the listener is told once the subscription is confirmed)."""
    await hub.join(channel, listener)
    await _settled(hub, channel, listener)


async def _settled(hub: Hub, channel: str, listener: Listener) -> None:
    """Until ``channel`` is subscribed (again) and the listener was told."""
    async with asyncio.timeout(5):
        while listener.behind or listener.lost:
            await listener.wait()
            await hub.rejoin(channel, listener)
    listener.reset()


async def _delivered(direct: Any, channel: str, listener: Listener, seq: int) -> None:
    """Publish batch ``seq`` until the listener has it (a subscription may be settling)."""
    async with asyncio.timeout(5):
        while True:
            await direct.publish(channel, codec.dumps([0, seq, ["x"]]))
            await asyncio.sleep(0.05)
            while (record := listener.pop()) is not None:
                if record[1] == seq:
                    return


async def test_a_silent_connection_that_answers_pings_is_kept(
    proxied: tuple[FreezableProxy, Any, Hub],
) -> None:
    proxy, direct, hub = proxied
    channel = f"{unique_prefix()}:ch"
    listener = Listener("job", limit=100)
    await _joined(hub, channel, listener)
    await asyncio.sleep(PROBE_S * 4)  # silent, but each ping is answered
    assert proxy.pings >= 2
    assert proxy.accepted == 1 and not listener.lost
    await _delivered(direct, channel, listener, 1)
    hub.leave(channel, listener)


async def test_a_black_holed_connection_is_pinged_then_replaced(
    proxied: tuple[FreezableProxy, Any, Hub],
) -> None:
    proxy, direct, hub = proxied
    channel = f"{unique_prefix()}:ch"
    listener = Listener("job", limit=100)
    await _joined(hub, channel, listener)
    await _delivered(direct, channel, listener, 1)
    pings = proxy.pings
    proxy.freeze()
    frozen_at = time.monotonic()
    # Given up within a ping after probe_s of silence plus probe_s without an answer (each
    # checked every probe_s / 4): its listeners are told they may have missed messages.
    async with asyncio.timeout(PROBE_S * 6):
        await listener.wait()
    assert listener.lost
    assert time.monotonic() - frozen_at >= PROBE_S * 1.5
    assert proxy.pings > pings
    # A new connection (not frozen) subscribes the channel again and carries its messages.
    await _settled(hub, channel, listener)
    assert proxy.accepted == 2
    await _delivered(direct, channel, listener, 2)
    hub.leave(channel, listener)
