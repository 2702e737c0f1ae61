"""Three instances on Redis behind HAProxy: every client ends with the whole answer once.

The conversations are on Redis, or in PostgreSQL (DATABASE_URL) for the ``postgresql`` cases.

Clients resume on whichever instance the load balancer picks; the instance generating an
answer is killed with SIGKILL (another one takes the job over and continues it); all three
are restarted one after the other (SIGTERM: drain and hand over) while answers stream.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.helpers import expected
from tests.server.resumer import Outcome, chat_once, follow, start_chat
from tests.server.rig import Rig, haproxy_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        haproxy_path() is None, reason="haproxy is not installed (scripts/test installs it)"
    ),
]


@dataclass(frozen=True)
class Backend:
    """Where the instances keep their state: Redis, and conversations on Redis or in a
    PostgreSQL database (a fresh one, migrated by the three instances starting at once)."""

    redis_uri: str
    env: dict[str, str]


@pytest.fixture(
    params=[
        pytest.param("standalone", id="standalone"),
        pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
        pytest.param("postgresql", id="postgresql"),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "cluster":
        return Backend(",".join(request.getfixturevalue("redis_cluster").urls()), {})
    uri = str(request.getfixturevalue("redis_standalone").url())
    if request.param == "postgresql":
        return Backend(uri, {"DATABASE_URL": request.getfixturevalue("postgres_database")})
    return Backend(uri, {})


def _rig(backend: Backend, tmp_path: Path, tokens_per_s: int, tokens: int) -> Iterator[Rig]:
    env = {"DEMO_TOKENS_PER_SECOND": str(tokens_per_s), "DEMO_RESPONSE_TOKENS": str(tokens)}
    rig = Rig(backend.redis_uri, tmp_path, {**env, **backend.env})
    try:
        yield rig.start()
    finally:
        rig.stop()


def check(outcome: Outcome, message: str, tokens: int) -> None:
    """The whole answer, exactly once, in order, ending with ``done``."""
    assert outcome.problems == [], outcome.problems
    assert outcome.final == "done", (outcome.final, outcome.final_data)
    assert outcome.ids == list(range(1, len(outcome.ids) + 1))
    assert outcome.text == expected(message, tokens)


async def stored_once(url: str, outcome: Outcome, cookies: httpx.Cookies) -> None:
    """The answer is in the conversation exactly once."""
    async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=10) as client:
        for _ in range(100):
            found: dict[str, Any] = (
                await client.get(f"/api/conversations/{outcome.conversation_id}")
            ).json()
            answers = [m for m in found.get("messages", []) if m["role"] == "assistant"]
            if answers:
                await asyncio.sleep(0.3)  # a second copy would show up now
                again = (await client.get(f"/api/conversations/{outcome.conversation_id}")).json()
                answers = [m for m in again["messages"] if m["role"] == "assistant"]
                assert len(answers) == 1
                assert answers[0]["content"] == outcome.text
                assert answers[0]["status"] == "done"
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the answer was never stored")


async def test_clients_resume_on_any_instance(backend: Backend, tmp_path: Path) -> None:
    tokens = 60
    for rig in _rig(backend, tmp_path, 40, tokens):
        messages = [f"question {i}" for i in range(6)]
        outcomes = await asyncio.gather(
            *(
                chat_once(rig.url, m, reconnect_every=(0.15, 0.5), seed=i)
                for i, m in enumerate(messages)
            )
        )
        for outcome, message in zip(outcomes, messages, strict=True):
            check(outcome, message, tokens)
            assert outcome.connections >= 3
        assert len(set().union(*(o.instances for o in outcomes))) == 3


async def _follow_chat(
    url: str, message: str, started: asyncio.Event, box: dict[str, Any]
) -> Outcome:
    outcome = Outcome()
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        first = await start_chat(client, message, deadline)
        box[message] = first
        outcome.stream_id = first["stream_id"]
        outcome.conversation_id = first["conversation_id"]
        started.set()
        await follow(client, outcome.stream_id, outcome, deadline=deadline, reconnect_every=None)
        box[message + ":cookies"] = client.cookies
    return outcome


async def test_kill_9_of_the_producing_instance(backend: Backend, tmp_path: Path) -> None:
    tokens = 60
    for rig in _rig(backend, tmp_path, 20, tokens):
        messages = [f"killed {i}" for i in range(3)]
        box: dict[str, Any] = {}
        flags = [asyncio.Event() for _ in messages]
        tasks = [
            asyncio.create_task(_follow_chat(rig.url, m, f, box))
            for m, f in zip(messages, flags, strict=True)
        ]
        await asyncio.gather(*(f.wait() for f in flags))
        await asyncio.sleep(1.0)
        victim = await asyncio.to_thread(rig.by_instance, box[messages[0]]["instance"])
        victim.kill()
        outcomes = await asyncio.gather(*tasks)
        for outcome, message in zip(outcomes, messages, strict=True):
            check(outcome, message, tokens)
        await stored_once(rig.url, outcomes[0], box[messages[0] + ":cookies"])
        takeovers = 0
        for server in rig.servers:
            if server is victim:
                continue
            async with httpx.AsyncClient(timeout=5) as probe:
                text = (await probe.get(f"{server.url}/metrics")).text
            found = re.search(r"^chatscale_streams_takeovers_total (\S+)$", text, re.M)
            takeovers += int(float(found.group(1))) if found else 0
        assert takeovers >= 1


async def test_rolling_restart_while_answers_stream(backend: Backend, tmp_path: Path) -> None:
    tokens = 160
    for rig in _rig(backend, tmp_path, 20, tokens):
        messages = [f"rolling {i}" for i in range(4)]
        box: dict[str, Any] = {}
        flags = [asyncio.Event() for _ in messages]
        tasks = [
            asyncio.create_task(_follow_chat(rig.url, m, f, box))
            for m, f in zip(messages, flags, strict=True)
        ]
        await asyncio.gather(*(f.wait() for f in flags))
        await asyncio.sleep(0.5)
        for server in rig.servers:
            server.signal()
            assert await asyncio.to_thread(server.wait, 20) == 0
            await asyncio.to_thread(server.start)
        outcomes = await asyncio.gather(*tasks)
        for outcome, message in zip(outcomes, messages, strict=True):
            check(outcome, message, tokens)
        for outcome, message in zip(outcomes, messages, strict=True):
            await stored_once(rig.url, outcome, box[message + ":cookies"])


async def test_a_handed_over_answer_keeps_its_concurrency_slot(
    redis_standalone: Any, tmp_path: Path
) -> None:
    # Defect 10: an answer handed over (drain) or taken over escaped
    # CHAT_CONCURRENCY_LIMIT: the new owner took no slot, so the user could start another.
    env = {"CHAT_CONCURRENCY_LIMIT": "1", "DEMO_TOKENS_PER_SECOND": "10"}
    env["DEMO_RESPONSE_TOKENS"] = "200"
    rig = Rig(str(redis_standalone.url()), tmp_path, env, instances=2)
    try:
        rig.start()
        first, second = rig.servers
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
            await client.get("/api/conversations")  # a session: limits count per user
            started = await start_chat(client, "hold the slot", time.monotonic() + 20)
            again = await client.post("/api/chat", json={"message": "too many"})
            assert again.status_code == 429
            first.signal()  # drain: the answer is handed over to ``second``
            assert await asyncio.to_thread(first.wait, 20) == 0
            stream = started["stream_id"]
            async with httpx.AsyncClient(
                base_url=second.url, cookies=client.cookies, timeout=10
            ) as other:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    text = (await other.get("/metrics")).text
                    if re.search(r"^chatscale_streams_takeovers_total [1-9]", text, re.M):
                        break
                    await asyncio.sleep(0.1)
                status = (await other.get(f"/api/chat/stream/{stream}/status")).json()
                assert status["status"] == "running", status
                refused = await other.post("/api/chat", json={"message": "still too many"})
                assert refused.status_code == 429, refused.text
    finally:
        rig.stop()
