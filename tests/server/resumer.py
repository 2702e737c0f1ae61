"""A client that starts a chat and follows it to the end across drops, restarts and
instances, the way the web page does: retried POST with a client_request_id, resume with
Last-Event-ID, checking that event ids advance by exactly one (nothing lost or repeated)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.server.helpers import parse

_RETRY_STATUS = {409, 429, 502, 503, 504}


@dataclass
class Outcome:
    """What one client saw."""

    stream_id: str = ""
    conversation_id: str = ""
    text: str = ""
    final: str = ""
    final_data: dict[str, Any] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    connections: int = 0
    instances: set[str] = field(default_factory=set)
    #: (receive time, event) for latency measurements.
    arrivals: list[float] = field(default_factory=list)


async def start_chat(client: httpx.AsyncClient, message: str, deadline: float) -> dict[str, Any]:
    """POST /api/chat until it is accepted (same client_request_id on every retry)."""
    body = {"message": message, "client_request_id": uuid.uuid4().hex}
    while True:
        try:
            response = await client.post("/api/chat", json=body)
            if response.status_code == 202:
                started: dict[str, Any] = response.json()
                started["instance"] = response.headers.get("x-chatscale-instance", "")
                return started
            if response.status_code not in _RETRY_STATUS:
                raise AssertionError(f"chat refused: {response.status_code} {response.text}")
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("could not start a chat before the deadline")
        await asyncio.sleep(0.2)


async def follow(
    client: httpx.AsyncClient,
    stream_id: str,
    outcome: Outcome,
    *,
    deadline: float,
    reconnect_every: tuple[float, float] | None = None,
    rng: random.Random | None = None,
) -> None:
    """Follow ``stream_id`` to its final event, resuming after every interruption."""
    rng = rng or random.Random()
    last = 0
    while not outcome.final:
        if time.monotonic() > deadline:
            try:
                status = (await client.get(f"/api/chat/stream/{stream_id}/status")).json()
                status.pop("text", None)
            except (httpx.HTTPError, ValueError) as exc:
                status = {"status request failed": repr(exc)}
            outcome.problems.append(
                f"deadline passed before the final event (last event {last}; status {status})"
            )
            return
        headers = {"Last-Event-ID": str(last)} if last else {}
        cut_at = time.monotonic() + rng.uniform(*reconnect_every) if reconnect_every else None
        try:
            async with client.stream(
                "GET", f"/api/chat/stream/{stream_id}", headers=headers, timeout=10
            ) as response:
                outcome.connections += 1
                if "x-chatscale-instance" in response.headers:
                    outcome.instances.add(response.headers["x-chatscale-instance"])
                if response.status_code != 200:
                    if response.status_code not in _RETRY_STATUS:
                        body = await response.aread()
                        outcome.problems.append(f"status {response.status_code}: {body!r}")
                        return
                    await asyncio.sleep(0.1)
                    continue
                async for event in parse(response.aiter_lines()):
                    if event.event == "reconnect":
                        break
                    number = int(event.id or 0)
                    if number != last + 1:
                        outcome.problems.append(f"expected event {last + 1}, got {number}")
                    last = number
                    outcome.ids.append(number)
                    if event.event == "delta":
                        outcome.text += event.data["text"]
                        outcome.arrivals.append(time.monotonic())
                    if event.event in ("done", "aborted", "error"):
                        outcome.final = event.event
                        outcome.final_data = event.data
                        return
                    if cut_at is not None and time.monotonic() >= cut_at:
                        break
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)


async def chat_once(
    base_url: str,
    message: str,
    *,
    deadline_s: float = 60.0,
    reconnect_every: tuple[float, float] | None = None,
    seed: int = 0,
) -> Outcome:
    """Start one chat through ``base_url`` and follow it to the end."""
    outcome = Outcome()
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        started = await start_chat(client, message, deadline)
        outcome.stream_id = started["stream_id"]
        outcome.conversation_id = started["conversation_id"]
        await follow(
            client,
            outcome.stream_id,
            outcome,
            deadline=deadline,
            reconnect_every=reconnect_every,
            rng=random.Random(seed),
        )
    return outcome
