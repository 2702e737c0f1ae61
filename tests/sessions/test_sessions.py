"""Sessions through the ASGI middleware, on memory and on every Redis topology."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.redis import RedisConnection, connect
from chatscale.sessions import (
    MemorySessionStore,
    RedisSessionStore,
    SessionConfig,
    SessionDataError,
    SessionManager,
    SessionStore,
    StoredSession,
    session_config,
)
from chatscale.sessions.cookies import derive_key, hash_id, unsign
from tests.conftest import TOPOLOGIES
from tests.sessions.apps import (
    COOKIE,
    SECRET,
    client,
    cookie_value,
    make_app,
    set_cookie,
    with_cookie,
)

TTL = 3_600
KEY = derive_key(SECRET.encode())


class CountingStore:
    """Wraps a real store and counts the operations the manager performs."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {"load": 0, "save": 0, "touch": 0, "delete": 0}

    async def load(self, id_hash: str) -> StoredSession | None:
        self.calls["load"] += 1
        return await self.inner.load(id_hash)

    async def save(self, id_hash: str, state: str, ttl: int) -> None:
        self.calls["save"] += 1
        await self.inner.save(id_hash, state, ttl)

    async def touch(self, id_hash: str, ttl: int) -> None:
        self.calls["touch"] += 1
        await self.inner.touch(id_hash, ttl)

    async def delete(self, id_hash: str) -> None:
        self.calls["delete"] += 1
        await self.inner.delete(id_hash)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def writes(self) -> int:
        return self.calls["save"] + self.calls["touch"] + self.calls["delete"]


def config(**overrides: Any) -> SessionConfig:
    values: dict[str, Any] = {"signing_key": KEY, "ttl": TTL, "cookie_name": COOKIE}
    values.update(overrides)
    return SessionConfig(**values)


@pytest.fixture(params=[pytest.param("memory", id="memory"), *TOPOLOGIES])
def store(request: pytest.FixtureRequest) -> CountingStore:
    """A counting store on memory or on one Redis topology (a plain fixture: pytest-asyncio
    cannot resolve async fixtures from inside an async one)."""
    inner: SessionStore
    if request.param == "memory":
        inner = MemorySessionStore()
    else:
        conn: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
        inner = RedisSessionStore(conn)
    return CountingStore(inner)


async def test_first_visit_gets_an_anonymous_identity_and_a_cookie(store: CountingStore) -> None:
    app = make_app(SessionManager(store, config()))
    async with client(app) as http:
        first = await http.get("/whoami")
        assert first.status_code == 200
        body = first.json()
        assert body["new"] is True and body["anonymous"] is True
        assert body["user"].startswith("anon-")
        header = set_cookie(first)
        assert header is not None
        attributes = {a.strip().split("=")[0].lower() for a in header.split(";")[1:]}
        assert {"path", "max-age", "httponly", "samesite"} <= attributes
        assert "secure" not in attributes  # plain http and SESSION_COOKIE_SECURE=auto
        assert "SameSite=Lax" in header and f"Max-Age={TTL}" in header
        again = await http.get("/whoami", headers=with_cookie(cookie_value(first)))
        assert again.json()["user"] == body["user"]
        assert again.json()["new"] is False


@pytest.mark.parametrize(
    ("mode", "base", "secure"),
    [
        ("auto", "https://test", True),
        ("auto", "http://test", False),
        ("true", "http://test", True),
        ("false", "https://test", False),
    ],
)
async def test_secure_attribute(mode: Any, base: str, secure: bool) -> None:
    app = make_app(SessionManager(MemorySessionStore(), config(secure=mode)))
    async with client(app, base) as http:
        header = set_cookie(await http.get("/whoami"))
    assert header is not None
    assert ("; Secure" in header) is secure
    # Over https the name carries the __Host- prefix (Secure, Path=/, no Domain).
    assert header.startswith("__Host-" + COOKIE + "=") is secure
    assert "Path=/;" in header and "domain" not in header.lower()


async def test_data_round_trip(store: CountingStore) -> None:
    app = make_app(SessionManager(store, config()))
    async with client(app) as http:
        cookie = cookie_value(await http.get("/put", params={"theme": "dark"}))
        body = (await http.get("/whoami", headers=with_cookie(cookie))).json()
    assert body["data"] == {"theme": "dark"}


async def test_written_only_when_changed(store: CountingStore) -> None:
    app = make_app(SessionManager(store, config()))
    async with client(app) as http:
        first = await http.get("/whoami")
        assert store.writes() == 1  # the new session
        cookie = cookie_value(first)
        for _ in range(5):
            response = await http.get("/whoami", headers=with_cookie(cookie))
            assert set_cookie(response) is None
        assert store.writes() == 1
        await http.get("/put", params={"a": "1"}, headers=with_cookie(cookie))
        assert store.calls["save"] == 2
        await http.get("/put", params={"a": "1"}, headers=with_cookie(cookie))  # same value
        assert store.calls["save"] == 2
        assert store.calls["touch"] == 0


async def test_sliding_expiry_renews_only_when_due(redis_conn: RedisConnection) -> None:
    """Proven on the key's TTL in Redis: a young session is not rewritten; an old one is."""
    store = RedisSessionStore(redis_conn)
    app = make_app(SessionManager(store, config(refresh_after=600)))
    async with client(app) as http:
        cookie = cookie_value(await http.get("/whoami"))
        session_id = unsign(cookie, KEY)
        assert session_id is not None
        key = redis_conn.keys.session(hash_id(session_id))
        # Younger than refresh_after: the request must not touch the key.
        await redis_conn.client.expire(key, TTL - 100)
        response = await http.get("/whoami", headers=with_cookie(cookie))
        assert set_cookie(response) is None
        assert TTL - 110 <= await redis_conn.client.ttl(key) <= TTL - 100
        # Older than refresh_after: the expiry and the cookie's Max-Age restart.
        await redis_conn.client.expire(key, TTL - 700)
        response = await http.get("/whoami", headers=with_cookie(cookie))
        assert set_cookie(response) is not None
        assert await redis_conn.client.ttl(key) >= TTL - 5


async def test_memory_sessions_expire() -> None:
    store = MemorySessionStore()
    await store.save("h", "{}", 1)
    assert await store.load("h") is not None
    await store.touch("h", 0)
    assert await store.load("h") is None


async def test_expired_session_gives_a_fresh_one(store: CountingStore) -> None:
    app = make_app(SessionManager(store, config()))
    async with client(app) as http:
        first = await http.get("/whoami")
        cookie = cookie_value(first)
        session_id = unsign(cookie, KEY)
        assert session_id is not None
        await store.delete(hash_id(session_id))  # what expiry does
        again = await http.get("/whoami", headers=with_cookie(cookie))
    assert again.status_code == 200
    assert again.json()["new"] is True
    assert again.json()["user"] != first.json()["user"]
    # The unknown id is not adopted: a new one is issued.
    assert cookie_value(again) != cookie


@pytest.mark.parametrize(
    "forge",
    [
        # A middle character of the signature: the last base64 character also carries
        # unused padding bits, so changing it can leave the decoded signature unchanged.
        lambda c: c[:-5] + ("A" if c[-5] != "A" else "B") + c[-4:],  # signature changed
        lambda c: ("B" if c[0] != "B" else "C") + c[1:],  # id changed
        lambda c: c + "x",
        lambda c: "",
        lambda c: "not a cookie at all \u00e9",
        lambda c: c.replace(".", ""),
    ],
)
async def test_tampered_cookie_gives_a_fresh_session(forge: Any) -> None:
    app = make_app(SessionManager(MemorySessionStore(), config()))
    async with client(app) as http:
        first = await http.get("/put", params={"secret": "mine"})
        cookie = cookie_value(first)
        forged = await http.get(
            "/whoami", headers={b"cookie": f"{COOKIE}={forge(cookie)}".encode()}
        )
    assert forged.status_code == 200
    assert forged.json()["new"] is True and forged.json()["data"] == {}


async def test_cookie_signed_with_another_secret_is_ignored() -> None:
    store = MemorySessionStore()
    app_a = make_app(SessionManager(store, config()))
    app_b = make_app(SessionManager(store, config(signing_key=derive_key(b"other" * 10))))
    async with client(app_a) as a, client(app_b) as b:
        cookie = cookie_value(await a.get("/put", params={"k": "v"}))
        response = await b.get("/whoami", headers=with_cookie(cookie))
    assert response.json()["new"] is True


async def test_a_session_written_on_one_instance_is_read_on_another(
    redis_conn: RedisConnection,
) -> None:
    other = await connect(redis_conn.config)  # a second process's own connection
    try:
        app_a = make_app(SessionManager(RedisSessionStore(redis_conn), config()))
        app_b = make_app(SessionManager(RedisSessionStore(other), config()))
        async with client(app_a) as a, client(app_b) as b:
            first = await a.get("/put", params={"lang": "fr"})
            cookie = cookie_value(first)
            on_b = (await b.get("/whoami", headers=with_cookie(cookie))).json()
            await b.get("/put", params={"lang": "de"}, headers=with_cookie(cookie))
            on_a = (await a.get("/whoami", headers=with_cookie(cookie))).json()
        assert on_b["new"] is False and on_b["data"] == {"lang": "fr"}
        assert on_a["data"] == {"lang": "de"}
        assert on_a["user"] == on_b["user"]
    finally:
        await other.close()


async def test_rotation_changes_the_id_and_invalidates_the_old_one(store: CountingStore) -> None:
    app = make_app(SessionManager(store, config()))
    async with client(app) as http:
        old = cookie_value(await http.get("/put", params={"cart": "3"}))
        response = await http.get("/login", params={"user": "alice"}, headers=with_cookie(old))
        new = cookie_value(response)
        assert new != old
        after = (await http.get("/whoami", headers=with_cookie(new))).json()
        assert after["user"] == "alice" and after["anonymous"] is False
        assert after["data"] == {"cart": "3"}
        stale = (await http.get("/whoami", headers=with_cookie(old))).json()
        assert stale["new"] is True and stale["user"] != "alice"
    old_id = unsign(old, KEY)
    assert old_id is not None
    assert await store.inner.load(hash_id(old_id)) is None


async def test_destroy_deletes_and_clears_the_cookie(store: CountingStore) -> None:
    app = make_app(SessionManager(store, config()))
    async with client(app) as http:
        cookie = cookie_value(await http.get("/put", params={"k": "v"}))
        response = await http.get("/logout", headers=with_cookie(cookie))
        header = set_cookie(response)
        assert header is not None and "Max-Age=0" in header
        after = (await http.get("/whoami", headers=with_cookie(cookie))).json()
    assert after["new"] is True and after["data"] == {}
    session_id = unsign(cookie, KEY)
    assert session_id is not None
    assert await store.inner.load(hash_id(session_id)) is None


async def test_only_the_hash_of_the_id_is_stored(standalone_conn: RedisConnection) -> None:
    app = make_app(SessionManager(RedisSessionStore(standalone_conn), config()))
    async with client(app) as http:
        cookie = cookie_value(await http.get("/put", params={"k": "v"}))
    session_id = unsign(cookie, KEY)
    assert session_id is not None
    keys = [k async for k in standalone_conn.client.scan_iter(standalone_conn.keys.all_pattern)]
    assert keys == [standalone_conn.keys.session(hash_id(session_id)).encode()]
    value = await standalone_conn.client.get(keys[0])
    assert isinstance(value, bytes)
    assert session_id.encode() not in keys[0] and session_id.encode() not in value
    assert cookie.encode() not in value
    stored = json.loads(value)
    assert stored["data"] == {"k": "v"} and stored["user"].startswith("anon-")


async def test_unreadable_stored_data_gives_a_fresh_session(
    standalone_conn: RedisConnection, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(SessionManager(RedisSessionStore(standalone_conn), config()))
    async with client(app) as http:
        cookie = cookie_value(await http.get("/whoami"))
        session_id = unsign(cookie, KEY)
        assert session_id is not None
        key = standalone_conn.keys.session(hash_id(session_id))
        for junk in (b"\xff\xfe", b"not json", b'{"v": 2}', b'{"v":1,"user":"","data":{}}'):
            await standalone_conn.client.set(key, junk)
            with caplog.at_level(logging.WARNING, "chatscale.sessions"):
                response = await http.get("/whoami", headers=with_cookie(cookie))
            assert response.status_code == 200 and response.json()["new"] is True


async def test_non_json_data_is_refused_where_it_is_set() -> None:
    app = make_app(SessionManager(MemorySessionStore(), config()))
    async with client(app) as http:
        with pytest.raises(SessionDataError, match="JSON"):
            await http.get("/bad")


async def test_changes_while_streaming_are_saved(store: CountingStore) -> None:
    app = make_app(SessionManager(store, config()))
    async with client(app) as http:
        response = await http.get("/stream")
        assert response.text == "first\nsecond\n"
        cookie = cookie_value(response)
        body = (await http.get("/whoami", headers=with_cookie(cookie))).json()
    assert body["data"] == {"streamed": "yes"}


async def test_concurrent_first_visits_get_distinct_identities() -> None:
    app = make_app(SessionManager(MemorySessionStore(), config()))
    async with client(app) as http:
        responses = await asyncio.gather(*(http.get("/whoami") for _ in range(50)))
    assert len({r.json()["user"] for r in responses}) == 50


async def test_websocket_and_lifespan_scopes() -> None:
    manager = SessionManager(MemorySessionStore(), config())
    from chatscale.sessions import SessionMiddleware

    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen[scope["type"]] = scope.get("session")
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    middleware = SessionMiddleware(app, manager)
    await middleware({"type": "lifespan"}, receive, send)
    assert seen["lifespan"] is None
    await middleware({"type": "websocket", "headers": [], "scheme": "wss"}, receive, send)
    assert seen["websocket"].user_id.startswith("anon-")
    headers = dict(sent[0]["headers"])
    assert b"; Secure" in headers[b"set-cookie"]


def test_config_requires_a_shared_secret_with_redis() -> None:
    from chatscale.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        session_config(load_settings(use_redis=True, redis_uri="redis://127.0.0.1:1"))
    assert info.value.variable == "SESSION_SECRET" and "USE_REDIS" in str(info.value)


def test_config_rejects_a_short_secret_without_showing_it() -> None:
    from chatscale.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        session_config(load_settings(session_secret="short-secret"))
    assert info.value.variable == "SESSION_SECRET"
    assert "short-secret" not in str(info.value)


def test_config_rejects_a_bad_cookie_name() -> None:
    from chatscale.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        session_config(load_settings(session_cookie_name="bad name;"))
    assert info.value.variable == "SESSION_COOKIE_NAME"


def test_config_without_secret_warns_and_generates_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "chatscale.sessions"):
        first = session_config(load_settings(session_secret=None))
        second = session_config(load_settings(session_secret=None))
    assert "SESSION_SECRET" in caplog.text
    assert first.signing_key != second.signing_key
    same = session_config(load_settings(session_secret=SECRET))
    assert same.signing_key == KEY and same.ttl == 7 * 86_400


async def test_memory_store_sweeps_expired_sessions() -> None:
    store = MemorySessionStore(sweep_every=3)
    await store.save("old1", "{}", 1)
    await store.save("old2", "{}", 1)
    await store.touch("old1", 0)
    await store.touch("old2", 0)
    await store.save("new", "{}", 60)  # the third write sweeps
    assert len(store) == 1


async def test_rotation_requested_after_the_response_started_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = SessionManager(MemorySessionStore(), config())
    opened = await manager.open([])
    await manager.commit(opened, secure=False)
    before = opened.session.session_id
    opened.session.rotate()
    opened.session["late"] = 1
    with caplog.at_level(logging.WARNING, "chatscale.sessions"):
        await manager.commit_late(opened)
    assert "rotation" in caplog.text
    assert opened.session.session_id == before
    stored = await manager.store.load(opened.session.id_hash)
    assert stored is not None and '"late":1' in stored.state


def test_user_id_must_be_a_short_non_empty_string() -> None:
    from chatscale.sessions import Session

    session = Session(
        session_id="x",
        id_hash="h",
        user_id="anon-1",
        data={},
        created_at=0,
        is_new=True,
        saved_state=None,
    )
    for bad in ["", "x" * 257, 5]:
        with pytest.raises(ValueError, match="user_id"):
            session.user_id = bad  # type: ignore[assignment]
    with pytest.raises(SessionDataError):
        session[1] = "v"  # type: ignore[index]
    session.destroy()
    with pytest.raises(RuntimeError, match="destroyed"):
        session["k"] = "v"


async def test_redis_commands_of_unchanged_requests(standalone_factory: Any) -> None:
    """Counted by the server itself (a private one, so nothing else adds commands)."""
    server = standalone_factory()
    conn = await connect(
        load_settings(use_redis=True, redis_uri=server.url(), redis_key_prefix="cmds").redis  # type: ignore[arg-type]
    )
    try:
        app = make_app(SessionManager(RedisSessionStore(conn), config()))
        async with client(app) as http:
            cookie = cookie_value(await http.get("/whoami"))
            await conn.client.config_resetstat()
            for _ in range(10):
                await http.get("/whoami", headers=with_cookie(cookie))
            stats = await conn.client.info("commandstats")
            await http.get("/put", params={"x": "1"}, headers=with_cookie(cookie))
            after = await conn.client.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
        calls.pop("config|resetstat", None)
        assert calls == {"get": 10, "pttl": 10}  # reads only: no SET, no EXPIRE
        assert after["cmdstat_set"]["calls"] == 1  # one change, one write
    finally:
        await conn.close()


async def test_manager_built_later_by_the_lifespan() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from chatscale.sessions import SessionMiddleware

    holder: dict[str, SessionManager] = {}

    async def who(request: Request) -> Response:
        return JSONResponse({"has_session": "session" in request.scope})

    app = Starlette(
        routes=[Route("/", who)],
        middleware=[Middleware(SessionMiddleware, manager=lambda: holder.get("m"))],
    )
    async with client(app) as http:
        before = await http.get("/")
        holder["m"] = SessionManager(MemorySessionStore(), config())
        after = await http.get("/")
    assert before.json() == {"has_session": False} and set_cookie(before) is None
    assert after.json() == {"has_session": True} and set_cookie(after) is not None


async def test_secret_rotation_keeps_sessions_and_re_signs_cookies(store: CountingStore) -> None:
    old, new = "o" * 40, "n" * 40
    before = session_config(load_settings(session_secret=old))
    during = session_config(load_settings(session_secret=new, session_secret_previous=old))
    after = session_config(load_settings(session_secret=new))
    app_old = make_app(SessionManager(store, config(signing_key=before.signing_key)))
    app_during = make_app(
        SessionManager(
            store, config(signing_key=during.signing_key, previous_keys=during.previous_keys)
        )
    )
    app_after = make_app(SessionManager(store, config(signing_key=after.signing_key)))
    async with client(app_old) as a, client(app_during) as b, client(app_after) as c:
        first = await a.get("/put", params={"k": "v"})
        old_cookie = cookie_value(first)
        writes = store.writes()
        accepted = await b.get("/whoami", headers=with_cookie(old_cookie))
        assert accepted.json()["new"] is False and accepted.json()["data"] == {"k": "v"}
        new_cookie = cookie_value(accepted)  # re-signed with the new secret, same id
        assert new_cookie != old_cookie
        assert new_cookie.split(".")[0] == old_cookie.split(".")[0]
        assert store.writes() == writes  # re-signing writes nothing
        quiet = await b.get("/whoami", headers=with_cookie(new_cookie))
        assert set_cookie(quiet) is None
        assert (await c.get("/whoami", headers=with_cookie(new_cookie))).json()["new"] is False
        assert (await c.get("/whoami", headers=with_cookie(old_cookie))).json()["new"] is True
    # First rollout step: still signing with the old secret, already accepting the new one.
    step1 = session_config(load_settings(session_secret=old, session_secret_previous=new))
    app_step1 = make_app(
        SessionManager(
            store, config(signing_key=step1.signing_key, previous_keys=step1.previous_keys)
        )
    )
    async with client(app_step1) as d:
        assert (await d.get("/whoami", headers=with_cookie(new_cookie))).json()["new"] is False


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"session_secret_previous": "o" * 40}, "without SESSION_SECRET"),
        ({"session_secret": "n" * 40, "session_secret_previous": "short"}, "too short"),
        ({"session_secret": "n" * 40, "session_secret_previous": "n" * 40}, "equals"),
    ],
)
def test_previous_secret_rules(values: dict[str, str], problem: str) -> None:
    from chatscale.errors import ConfigError

    with pytest.raises(ConfigError, match=problem) as info:
        session_config(load_settings(**values))
    assert info.value.variable == "SESSION_SECRET_PREVIOUS"
    assert "o" * 40 not in str(info.value) and "short" not in repr(info.value.value)


async def test_unconfirmed_sessions_expire_soon(redis_conn: RedisConnection) -> None:
    """A client that never returns its cookie cannot fill Redis with week-long sessions."""
    week = 7 * 86_400
    store = CountingStore(RedisSessionStore(redis_conn))
    app = make_app(SessionManager(store, config(ttl=week)))
    async with client(app) as http:
        first = await http.get("/whoami")
        assert f"Max-Age={week}" in (set_cookie(first) or "")
        cookie = cookie_value(first)
        session_id = unsign(cookie, KEY)
        assert session_id is not None
        key = redis_conn.keys.session(hash_id(session_id))
        assert 3_590 <= await redis_conn.client.ttl(key) <= 3_600
        # The cookie came back: the session is confirmed and gets its full lifetime.
        confirmed = await http.get("/whoami", headers=with_cookie(cookie))
        assert confirmed.json()["new"] is False and set_cookie(confirmed) is not None
        assert await redis_conn.client.ttl(key) >= week - 5
        writes = store.writes()
        quiet = await http.get("/whoami", headers=with_cookie(cookie))
        assert set_cookie(quiet) is None and store.writes() == writes


async def test_memory_store_is_bounded() -> None:
    store = MemorySessionStore(max_entries=3)
    for name in "abcde":
        await store.save(name, "{}", 60)
    assert len(store) == 3
    assert await store.load("a") is None and await store.load("e") is not None


async def test_over_https_only_the_host_prefixed_cookie_is_read() -> None:
    app = make_app(SessionManager(MemorySessionStore(), config()))
    async with client(app, "https://test") as http:
        first = await http.get("/put", params={"k": "v"})
        value = cookie_value(first)
        named = await http.get("/whoami", headers={"cookie": f"__Host-{COOKIE}={value}"})
        assert named.json()["data"] == {"k": "v"}
        # The same value under the unprefixed name (which a sibling subdomain or a
        # plain-http page could plant) is not read over https.
        planted = await http.get("/whoami", headers=with_cookie(value))
        assert planted.json()["new"] is True and planted.json()["data"] == {}


@pytest.mark.parametrize("second", ["valid", "forged"])
async def test_several_session_cookies_are_refused(second: str) -> None:
    store = MemorySessionStore()
    app = make_app(SessionManager(store, config()))
    async with client(app) as http:
        mine = cookie_value(await http.get("/put", params={"k": "mine"}))
        theirs = cookie_value(await http.get("/put", params={"k": "theirs"}))
        other = theirs if second == "valid" else "x" * 87
        for header in (
            f"{COOKIE}={mine}; {COOKIE}={other}",
            f"{COOKIE}={other}; {COOKIE}={mine}",
        ):
            refused = await http.get("/whoami", headers={"cookie": header})
            assert refused.status_code == 400, refused.text
            assert "several session cookies" in refused.json()["error"]
            cleared = set_cookie(refused)
            assert cleared is not None and "Max-Age=0" in cleared
        # Two Cookie headers count too.
        split = await http.get(
            "/whoami", headers=[("cookie", f"{COOKIE}={mine}"), ("cookie", f"{COOKIE}={other}")]
        )
        assert split.status_code == 400
        alone = await http.get("/whoami", headers=with_cookie(mine))
        assert alone.status_code == 200 and alone.json()["data"] == {"k": "mine"}
