"""When Redis loses its data: a running answer stays reachable by the client that started it
(its resume token), and a token that proves nothing is a 403 JSON answer, never a 500."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from chatscale.config import load_settings
from chatscale.server.resume import TOKEN_TTL_S, BadToken, ResumeTokens
from chatscale.sessions import session_config
from tests.server.helpers import ServerThread, SSEvent, expected, read_events, text_of
from tests.server.rig import SECRET

TOKENS = 60


async def _resume(client: httpx.AsyncClient, url: str) -> list[SSEvent]:
    """The rest of the stream once its producer rebuilt it (about a second after the loss)."""
    for _ in range(100):
        answer = await client.get(f"{url.split('?')[0]}/status", params=dict(_query(url)))
        if answer.status_code == 200:
            return await read_events(client, url)
        assert answer.status_code == 404, answer.text
        await asyncio.sleep(0.05)
    raise AssertionError("the stream was never rebuilt")


def _query(url: str) -> list[tuple[str, str]]:
    query = url.partition("?")[2]
    return [(k, v) for k, _, v in (p.partition("=") for p in query.split("&")) if k == "token"]


@pytest.mark.slow
async def test_running_answer_survives_flushall_with_its_token(standalone_factory: Any) -> None:
    redis = standalone_factory()  # this test's own Redis: FLUSHALL touches nothing else
    settings = load_settings(
        use_redis=True,
        redis_uri=redis.url(),
        session_secret=SECRET,
        demo_tokens_per_second=20,
        demo_response_tokens=TOKENS,
    )
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            await client.get("/api/conversations")  # a session first, as the page has
            started = (await client.post("/api/chat", json={"message": "survive this"})).json()
            url = f"/api/chat/stream/{started['stream_id']}"
            first = await read_events(client, url, limit=5)
            assert (await asyncio.to_thread(redis.cli, "FLUSHALL")).strip() == "OK"
        # The session is gone with the data: a fresh cookie jar stands for the same browser.
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as fresh:
            token = started["resume_token"]
            rest = await _resume(fresh, f"{url}?after={first[-1].id}&token={token}")
            assert rest[0].id == str(int(first[-1].id or 0) + 1)
            assert rest[-1].event == "done"
            assert text_of(first) + text_of(rest) == expected("survive this", tokens=TOKENS)
            status = await fresh.get(f"{url}/status", headers={"X-Resume-Token": token})
            assert status.status_code == 200 and status.json()["status"] == "done"
            # Without the token the new session owns nothing.
            for path in (url, f"{url}/status"):
                lost = await fresh.get(path)
                assert lost.status_code == 404
                assert lost.json() == {"error": "stream not found"}


async def test_a_token_reaches_the_stream_from_any_session(client: httpx.AsyncClient) -> None:
    started = (await client.post("/api/chat", json={"message": "mine"})).json()
    url = f"/api/chat/stream/{started['stream_id']}"
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10) as stranger:
        assert (await stranger.get(url)).status_code == 404
        events = await read_events(stranger, f"{url}?token={started['resume_token']}")
        assert events[-1].event == "done"
        assert text_of(events) == expected("mine")
    active = (await client.get("/api/chat/active")).json()["streams"]
    assert all(s["resume_token"] for s in active)


def _tampered(token: str) -> str:
    version, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{version}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda t, _s, _i: _tampered(t), "invalid resume token"),
        (lambda _t, _s, _i: "abc", "malformed resume token"),
        (lambda _t, _s, _i: "v1.%C3%A9.x", "invalid resume token"),
        (lambda _t, _s, _i: "v1." + "A" * 2000 + ".x", "malformed resume token"),
        (lambda _t, s, _i: s.tokens.issue("other-stream", "anon-x"), "for another stream"),
        (
            lambda _t, s, i: s.tokens.issue(i, "anon-x", now=time.time() - 2 * TOKEN_TTL_S),
            "resume token expired",
        ),
        (
            lambda _t, _s, i: ResumeTokens.for_sessions(
                session_config(load_settings(session_secret=SECRET))
            ).issue(i, "anon-x"),
            "invalid resume token",
        ),
    ],
    ids=["tampered", "garbage", "non-ascii", "too-long", "other-stream", "expired", "other-key"],
)
async def test_bad_tokens_are_403_json(
    server: ServerThread, client: httpx.AsyncClient, make: Any, reason: str
) -> None:
    started = (await client.post("/api/chat", json={"message": "guarded"})).json()
    stream_id = started["stream_id"]
    bad = unquote(make(started["resume_token"], server.services, stream_id))
    url = f"/api/chat/stream/{stream_id}"
    for method, path, how in (
        ("GET", url, "query"),
        ("GET", url, "header"),
        ("GET", f"{url}/status", "query"),
        ("POST", f"{url}/abort", "header"),
    ):
        if how == "query" or not bad.isascii():
            answer = await client.request(method, path, params={"token": bad})
        else:
            answer = await client.request(method, path, headers={"X-Resume-Token": bad})
        assert answer.status_code == 403, (path, how, answer.text)
        assert answer.headers["content-type"].startswith("application/json")
        assert reason in answer.json()["error"]


def test_tokens_follow_a_secret_rotation() -> None:
    old_secret, new_secret = SECRET, SECRET[::-1]
    old = ResumeTokens.for_sessions(session_config(load_settings(session_secret=old_secret)))
    rotated = ResumeTokens.for_sessions(
        session_config(load_settings(session_secret=new_secret, session_secret_previous=old_secret))
    )
    token = old.issue("s1", "anon-1")
    assert rotated.verify(token, "s1") == "anon-1"  # signed before the rotation
    assert rotated.verify(rotated.issue("s1", "anon-1"), "s1") == "anon-1"
    with pytest.raises(BadToken, match="invalid resume token"):
        old.verify(rotated.issue("s1", "anon-1"), "s1")
